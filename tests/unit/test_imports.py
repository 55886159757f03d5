"""The web app and the producer run in small images without the ML stack: importing them loads no torch."""
import subprocess
import sys


def test_web_producer_and_intake_load_no_torch():
    code = ("import sys, wildswarm.web, wildswarm.producer, wildswarm.intake, wildswarm.reconciler, "
            "wildswarm.cli.jobs, wildswarm.cli.web; "
            "heavy = sorted(m for m in ('torch', 'ultralytics', 'deeplabcut', 'PytorchWildlife', 'cv2') "
            "if m in sys.modules); print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
