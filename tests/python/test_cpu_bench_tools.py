"""bench/compare.py on synthetic records (no GPU, no torch): the table, the speedup, and the paged
prefill lines that put each paged point beside the ragged record of the same shape."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPARE = os.path.join(ROOT, "bench", "compare.py")


def record(routine, us, shape, **params):
    p = {
        "batch": "4",
        "q_len": "4096",
        "kv_len": "4096",
        "q_heads": "8",
        "kv_heads": "8",
        "head_dim": "256",
        "causal": "0",
        "mode": "graph",
        "iters": "3",
        "warmup_ms": "1000",
        "flops": str(4 * 4 * 8 * 4096 * 4096 * 256),
    }
    p.update({k: str(v) for k, v in params.items()})
    return {
        "routine": routine,
        "model": "sweep",
        "shape": shape,
        "dtype": "bfloat16",
        "mode": "graph",
        "params": p,
        "median_us": us,
        "min_us": us,
        "max_us": us,
        "samples": 15,
        "bytes": 1.0,
        "tbps": 1.0,
        "ceiling_fraction": 0.25,
        "check": "-",
        "error": "",
    }


def run_compare(tmp_path, ours, peers):
    o, p = tmp_path / "ours.json", tmp_path / "peers.json"
    o.write_text(json.dumps({"device": "test", "version": "0", "copy_ceiling_tbps": 3.0,
                             "results": ours}))
    p.write_text(json.dumps({"results": peers}))
    r = subprocess.run([sys.executable, COMPARE, str(o), str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_paged_points_are_compared_with_their_ragged_twin(tmp_path):
    ours = [
        record("prefill", 800.0, "b4 s4096 8/8 x 256"),
        record("prefill", 500.0, "b4 s4096 8/8 x 256 causal", causal=1),
        record("prefill_paged", 1000.0, "b4 s4096 8/8 x 256 p16 NHD", page_size=16),
        record("prefill_paged", 520.0, "b4 s4096 8/8 x 256 causal p64 NHD", causal=1,
               page_size=64),
        # no ragged record of this shape in the run: no paged line for it
        record("prefill_paged", 300.0, "b4 s1024 8/8 x 256 p16 NHD", kv_len=1024, q_len=1024,
               page_size=16),
    ]
    peers = [{"torch_us": 880.0, "best_peer": "sdpa_cudnn"}, {}, {}, {}, {}]
    out = run_compare(tmp_path, ours, peers)
    lines = [l for l in out.splitlines() if "ragged" in l and "us" in l]
    assert len(lines) == 2, out
    # speed = ragged time / paged time; below the 0.90 it is marked
    assert "0.80" in lines[0] and lines[0].rstrip().endswith("below"), lines[0]
    assert "0.96" in lines[1] and not lines[1].rstrip().endswith("below"), lines[1]
    # the first row's peer: 880 us against our 800 us
    assert "1.10x" in out and "(sdpa_cudnn)" in out


def test_no_paged_section_without_paged_records(tmp_path):
    out = run_compare(tmp_path, [record("prefill", 800.0, "b4 s4096 8/8 x 256")],
                      [{"torch_us": 800.0, "best_peer": "sdpa_cudnn"}])
    assert "paged prefill" not in out
    assert "1.00x" in out
