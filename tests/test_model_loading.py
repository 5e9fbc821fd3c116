"""`--model` that cannot be found or loaded: one line naming the spec and what was tried, exit 2, no traceback.

Real `python -m worker` processes, started together (each fails within its imports), with no WORKER_*
variable of the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.services import ROOT


def test_models_that_cannot_be_found_or_loaded_get_one_line_each(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken_model.py").write_text("import os\nimport torch_absent_7c1  # not installed\n")
    (models / "raising_model.py").write_text(textwrap.dedent("""
        from worker import Model

        class Raising(Model):
            def __init__(self):
                raise RuntimeError("weights path not set")
    """))
    cases = {
        "nosuch_model_5e2": f"worker: --model 'nosuch_model_5e2': no module named 'nosuch_model_5e2' in {models} "
                            f"(--model-dir) or the installed packages of {sys.executable}",
        "mock_model:Nope": f"worker: --model 'mock_model:Nope': mock_model ({ROOT / 'mock_model' / '__init__.py'}) "
                           "has no attribute 'Nope'; models and handler functions there: MockModel",
        "broken_model": "worker: --model 'broken_model': importing broken_model failed: ModuleNotFoundError: No module "
                        f"named 'torch_absent_7c1' ({models / 'broken_model.py'}, line 2); LOG_LEVEL=DEBUG logs the "
                        "traceback",
        "raising_model:Raising": "worker: --model 'raising_model:Raising': creating Raising() failed: RuntimeError: "
                                 f"weights path not set ({models / 'raising_model.py'}, line 6); LOG_LEVEL=DEBUG logs "
                                 "the traceback",
        "my_model.py": f"worker: --model 'my_model.py': no module named 'my_model' in {models} (--model-dir) or the "
                       f"installed packages of {sys.executable}; name a module (my_model or my_package.module), not "
                       "a file: --model-dir names its folder",
    }
    def start(spec: str, **env) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "worker", "--model", spec, "--model-dir", str(models),
                                 "--listen", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={"PATH": os.environ["PATH"], **env})

    processes = {spec: start(spec) for spec in cases}
    debug = start("broken_model", LOG_LEVEL="DEBUG")
    for spec, expected in cases.items():
        stdout, stderr = processes[spec].communicate(timeout=60)
        assert processes[spec].returncode == 2, (spec, stderr)
        assert stderr.splitlines() == [expected], stderr
        assert stdout == ""
    # The traceback of the model's own error is there for whoever asks for it.
    _, stderr = debug.communicate(timeout=60)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in stderr and "import torch_absent_7c1" in stderr
    assert stderr.splitlines()[-1] == cases["broken_model"]
