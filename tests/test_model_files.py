"""Model files: no code from a model folder ever runs, and the files on disk are the files used.

See docs/security.md ("Model folders: no code, and the files on disk are the files used") and
the model cache in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


# -- a folder that needs its own Python code is refused, without a prompt ----------------------
def _custom_code_folder(tmp_path: Path, bert: str, marker: Path) -> Path:
    """A model folder whose config names a model type transformers does not know, and a Python
    file in the folder for it (``auto_map``): running that file creates ``marker``."""
    folder = tmp_path / "custom-code"
    shutil.copytree(bert, folder)
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-bert"
    config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModel": "custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_custom_code_in_a_model_folder_is_refused_without_a_prompt(tmp_path, tiny_model):
    """transformers asks on stdin whether to run such a folder's code (and runs it on "y") unless
    trust_remote_code is given: skembed says False, and names the folder in its error."""
    marker = tmp_path / "code-ran"
    folder = _custom_code_folder(tmp_path, tiny_model("bert"), marker)
    script = (
        "import sys, skembed\n"
        "try:\n"
        "    skembed.TransformerEmbeddings(sys.argv[1], device='cpu').fit()\n"
        "    print('LOADED')\n"
        "except ValueError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", SKEMBED_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        input="y\n" * 10,  # the answer that would run the code, were a question asked
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not marker.exists(), "code from the model folder ran"
    assert "[y/N]" not in output and "Do you wish" not in output, output
    refusal = proc.stdout.strip().splitlines()[-1]
    assert refusal.startswith(f"REFUSED Refusing the model folder {folder}:"), output
    assert "custom code" in refusal and "never runs" in refusal
    assert "trust_remote_code=True" not in output  # no advice to run it either
