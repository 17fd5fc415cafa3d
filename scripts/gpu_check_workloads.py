"""GPU check of the packaged workloads on ONE NVIDIA GPU: pre-train and LoRA fine-tune on a 0.5-GPU
slice and on the whole GPU, with tokens/s and peak memory (which must stay inside the slice).

Each case runs the real entry point (``python -m workloads.pretrain`` / ``workloads.finetune``) as
its own process with the slice env the agent sets (GPUPOOL_MEMORY_FRACTION, GPUPOOL_MEMORY_MIB,
rendezvous). Needs torch (CUDA), transformers and peft; DeepSpeed and pydantic come from bundled
wheels when missing. Prints one JSON summary line on stdout. Without a GPU: "no NVIDIA GPU", exit 0
(2 with --require-gpu). ``--cpu-rehearsal`` runs the same cases tiny on CPU (to test this script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIRS = [ROOT / "scripts" / "gpu-check-workloads-wheels", ROOT / "scripts" / "gpu-check-wheels"]
NEEDED = {"pydantic": "pydantic", "deepspeed": "deepspeed", "hjson": "hjson", "cpuinfo": "py_cpuinfo",
          "einops": "einops", "msgpack": "msgpack", "annotated_types": "annotated_types",
          "typing_inspection": "typing_inspection"}


def log(msg: str) -> None:
    print(f"[gpu-check-workloads] {msg}", file=sys.stderr, flush=True)


def ensure_packages(target: Path) -> dict[str, str]:
    """Unpack the bundled wheel of every needed module that does not import; returns module -> source."""
    import importlib.util

    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found: dict[str, str] = {}
    for module, dist in NEEDED.items():
        if importlib.util.find_spec(module) is not None:
            found[module] = "installed"
            continue
        wheels = [w for d in WHEEL_DIRS for w in d.glob(f"{dist}-*.whl")
                  if "-py3-none-" in w.name or f"-{tag}-{tag}-" in w.name]
        if module == "pydantic":  # pydantic needs its compiled core of the same Python
            wheels += [w for d in WHEEL_DIRS for w in d.glob(f"pydantic_core-*-{tag}-{tag}-*.whl")]
        if not wheels or (module in ("pydantic", "msgpack") and platform.machine() != "x86_64"):
            raise SystemExit(f"error: {module} is not installed and no bundled wheel fits {tag} on "
                             f"{platform.machine()}; pip install {dist}")
        target.mkdir(parents=True, exist_ok=True)
        for w in wheels:
            with zipfile.ZipFile(w) as zf:
                zf.extractall(target)
        found[module] = f"bundled {wheels[0].name}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NvmlPeak(threading.Thread):
    """Peak GPU memory NVML reports for a process tree (includes the CUDA context)."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.peak_mib, self.stop, self.available = root_pid, 0.0, False, False

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.available = True
        except Exception:  # noqa: BLE001 - NVML is optional for this check
            return
        while not self.stop:
            try:
                used = sum((p.usedGpuMemory or 0) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                           if _in_tree(p.pid, self.root_pid))
                self.peak_mib = max(self.peak_mib, used / 2**20)
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.1)


def _in_tree(pid: int, root: int) -> bool:
    for _ in range(16):
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


def run_case(name: str, module: str, spec: dict, fraction: float, total_mib: int, env: dict[str, str],
             timeout: float) -> dict:
    slice_mib = int(total_mib * fraction)
    case_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                "WORLD_SIZE": "1", "LOCAL_RANK": "0", "PYTHONUNBUFFERED": "1"}
    if fraction < 1:
        case_env.update(GPUPOOL_MEMORY_FRACTION=f"{fraction:.4f}", GPUPOOL_MEMORY_MIB=str(slice_mib),
                        GPUPOOL_DEVICE_MEMORY_MIB=str(total_mib))
    log(f"{name}: {module} on {fraction:g} GPU ({slice_mib} MiB)")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module, "--spec-json", json.dumps(spec)], cwd=ROOT, env=case_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nvml = NvmlPeak(proc.pid)
    nvml.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out = (proc.communicate()[0] or "") + f"\n(timed out after {timeout:g} s)"
    nvml.stop = True
    from workloads.progress import parse

    done = [p for p in map(parse, out.splitlines()) if p and p.get("done")]
    result: dict = {"case": name, "fraction": fraction, "slice_mib": slice_mib, "exit_code": proc.returncode,
                    "wall_s": round(time.monotonic() - t0, 1)}
    if proc.returncode != 0 or not done:
        result["ok"] = False
        result["error_tail"] = out[-1500:]
        log(f"{name}: FAILED (exit {proc.returncode})\n{out[-1500:]}")
        return result
    d = done[-1]
    peak = d.get("peak_gpu_mib")
    result.update(tokens_per_s=round(d["tokens_per_s"], 1), val_loss_start=round(d["first_val_loss"], 3),
                  val_loss_end=round(d["val_loss"], 3), peak_torch_mib=peak,
                  peak_nvml_mib=round(nvml.peak_mib, 1) if nvml.available else None)
    inside = peak is None or peak <= slice_mib
    result["inside_slice"] = inside
    result["ok"] = inside and d["val_loss"] < d["first_val_loss"]
    log(f"{name}: {result['tokens_per_s']} tokens/s, peak {peak} MiB (torch) / "
        f"{result['peak_nvml_mib']} MiB (NVML) of {slice_mib} MiB, loss {result['val_loss_start']} -> "
        f"{result['val_loss_end']}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", required=True)
    ap.add_argument("--require-gpu", action="store_true")
    ap.add_argument("--cpu-rehearsal", action="store_true", help="run tiny cases on CPU (tests this script)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError:
        print(json.dumps({"check": "gpu-check-workloads", "ok": False, "error": "torch is not installed"}))
        return 2
    if not torch.cuda.is_available() and not a.cpu_rehearsal:
        log("no NVIDIA GPU: torch.cuda.is_available() is False; nothing to check")
        print(json.dumps({"check": "gpu-check-workloads", "gpu": None, "skipped": "no NVIDIA GPU"}))
        return 2 if a.require_gpu else 0
    sources = ensure_packages(work / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(work / "site"), str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    sys.path[:0] = [str(work / "site"), str(ROOT)]
    if a.cpu_rehearsal:
        gpu_name, total_mib = "cpu (rehearsal)", 16384
        model = {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "max_seq_len": 128}
        train = {"steps": a.steps or 6, "micro_batch_size": 4, "seq_len": 64}
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        props = torch.cuda.get_device_properties(0)
        gpu_name, total_mib = props.name, props.total_memory // 2**20
        model = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "max_seq_len": 512}
        train = {"steps": a.steps or 60, "micro_batch_size": 16, "seq_len": 256}
    log(f"device {gpu_name}, {total_mib} MiB; packages {sources}")
    corpus = str(ROOT / "examples" / "corpus")
    common = {"checkpoint_every": 10_000, "eval_batches": 4, "log_every": 10, "precision": "auto"}
    results = []
    pre_out = work / "pretrain-whole"
    for fraction in (1.0, 0.5):
        out = work / f"pretrain-{'whole' if fraction == 1 else 'half'}"
        spec = {"kind": "pretrain", "name": "gpu-check-pretrain", "data": f"{corpus}/stories.txt", "output": str(out),
                "model": model, "dataset": {"vocab_size": 2000},
                "training": {**train, **common, "lr": 1e-3, "warmup_steps": 5, "zero_stage": 2}}
        results.append(run_case(f"pretrain-{fraction:g}", "workloads.pretrain", spec, fraction, total_mib, env, 240))
    base = pre_out / "model"
    for fraction in (1.0, 0.5):
        if not (base / "config.json").is_file():
            results.append({"case": f"lora-{fraction:g}", "ok": False, "error_tail": "no pre-trained base model"})
            continue
        out = work / f"lora-{'whole' if fraction == 1 else 'half'}"
        spec = {"kind": "finetune", "name": "gpu-check-lora", "data": f"{corpus}/qa.jsonl", "output": str(out),
                "base_model": str(base), "method": "lora",
                "training": {**train, **common, "lr": 2e-3, "zero_stage": 0}}
        results.append(run_case(f"lora-{fraction:g}", "workloads.finetune", spec, fraction, total_mib, env, 240))
    summary = {"check": "gpu-check-workloads", "gpu": gpu_name, "gpu_memory_mib": total_mib,
               "torch": torch.__version__, "packages": sources, "cases": results,
               "ok": all(r.get("ok") for r in results)}
    line = json.dumps(summary)
    print(line, flush=True)
    if a.out:
        Path(a.out).write_text(line + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
