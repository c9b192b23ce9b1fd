// flashserve: LLM-serving kernels for NVIDIA Hopper. Include this for the whole public API.
#pragma once

#include "flashserve/activation.h"
#include "flashserve/core/status.h"
#include "flashserve/decode.h"
#include "flashserve/logging.h"
#include "flashserve/norm.h"
#include "flashserve/page.h"
#include "flashserve/prefill.h"
#include "flashserve/rope.h"
#include "flashserve/runtime.h"
#include "flashserve/sampling.h"
#include "flashserve/tensor.h"
