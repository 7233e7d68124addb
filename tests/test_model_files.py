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
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import skembed
from skembed.elmo import ElmoOptions, write_random_elmo

DOCS = [["the", "film", "was", "shown", "in", "the", "city", "."], ["a", "cell", "phone"]]
TRANSFO_XL = Path(__file__).parent / "data" / "transfo_xl" / "model_a"


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


# -- files rewritten in place: the next estimator (and a refit) uses the new files -------------
def _rewrite(path: Path) -> None:
    """Rewrite a weights file in place with other weights (every float tensor doubled): the same
    size, only the modification time tells it changed."""
    time.sleep(0.05)  # past the file system's clock tick: the new file has another mtime
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        tensors = {k: v * 2 if v.is_floating_point() else v for k, v in load_file(path).items()}
        save_file(tensors, path, metadata={"format": "pt"})
    else:
        tensors = torch.load(path, weights_only=True)
        torch.save({k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}, path)


def _check_rewritten_files_are_used(make, rewrite) -> None:
    """``make()`` builds an estimator of model files that ``rewrite()`` changes in place."""
    fitted = make().fit()
    old = fitted.transform(DOCS).to_numpy()
    loads = sum(skembed.cache_info()["model_loads"].values())
    rewrite()
    new = make().fit().transform(DOCS).to_numpy()  # a new estimator: the new files
    assert sum(skembed.cache_info()["model_loads"].values()) == loads + 1
    assert new.shape == old.shape and not np.allclose(new, old)
    assert np.array_equal(fitted.fit(DOCS).transform(DOCS).to_numpy(), new)  # a refit too
    skembed.clear_cache()
    assert np.array_equal(make().fit().transform(DOCS).to_numpy(), new)  # what a fresh load gives


def test_a_transformer_folder_rewritten_in_place_is_loaded_again(tmp_path, tiny_model):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_model("bert"), folder)
    _check_rewritten_files_are_used(
        lambda: skembed.TransformerEmbeddings(str(folder), device="cpu"),
        lambda: _rewrite(folder / "model.safetensors"),
    )


def test_elmo_files_rewritten_in_place_are_loaded_again(tmp_path):
    options = ElmoOptions.from_dict(
        {
            "char_cnn": {
                "embedding": {"dim": 4},
                "filters": [[1, 4], [2, 4]],
                "n_highway": 1,
                "activation": "tanh",
            },
            "lstm": {"dim": 8, "projection_dim": 4, "n_layers": 1, "cell_clip": 3, "proj_clip": 3},
        }
    )
    files = tuple(map(str, write_random_elmo(tmp_path, options, seed=0)))

    def rewrite():
        time.sleep(0.05)  # past the file system's clock tick: the new file has another mtime
        write_random_elmo(tmp_path, options, seed=1)

    _check_rewritten_files_are_used(lambda: skembed.ELMoEmbeddings(files, device="cpu"), rewrite)


def test_a_transformer_xl_folder_rewritten_in_place_is_loaded_again(tmp_path):
    folder = tmp_path / "txl"
    shutil.copytree(TRANSFO_XL, folder)
    _check_rewritten_files_are_used(
        lambda: skembed.TransformerXLEmbeddings(str(folder), device="cpu"),
        lambda: _rewrite(folder / "pytorch_model.bin"),
    )


# -- the model cache is bounded, and drops the older versions of rewritten files ----------------
@pytest.fixture
def word_files(tmp_path, monkeypatch):
    """``word_files(n)`` -> paths of ``n`` tiny GloVe files (file i's vectors are all ``i``)."""
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    skembed.clear_cache()
    kept = skembed.cache_info()["max_models"]
    yield lambda n: [_glove(tmp_path / f"vectors{i}.txt", i) for i in range(n)]
    skembed.set_cache(max_models=kept)
    skembed.clear_cache()


def _glove(path: Path, value: float) -> str:
    path.write_text(f"the {value} {value}\ncat {value} {value}\n", encoding="utf-8")
    return str(path)


def _words(path: str):
    return skembed.WordEmbeddings(path, device="cpu")


def _loads() -> int:
    return sum(skembed.cache_info()["model_loads"].values())


def test_the_model_cache_keeps_the_most_recently_used_models(word_files):
    paths = word_files(3)
    assert skembed.cache_info()["max_models"] == 8  # the documented default
    skembed.set_cache(max_models=2)
    loads = _loads()
    first = _words(paths[0]).fit()
    for path in paths[1:]:
        _words(path).fit()
    assert skembed.cache_info()["models_loaded"] == 2 and _loads() == loads + 3
    # The evicted model still serves the estimator that holds it.
    assert first.transform([["the", "cat"]]).to_numpy().tolist() == [[0.0, 0.0]] * 2
    _words(paths[2]).fit()  # the most recent: still loaded
    assert _loads() == loads + 3
    _words(paths[0]).fit()  # evicted: loaded again
    assert _loads() == loads + 4
    skembed.set_cache(max_models=1)
    assert skembed.cache_info()["models_loaded"] == 1
    with pytest.raises(ValueError, match="max_models"):
        skembed.set_cache(max_models=-1)


def test_a_rewritten_file_replaces_its_older_version_in_the_model_cache(word_files):
    (path,) = word_files(1)
    loads = _loads()
    old = _words(path).fit()
    time.sleep(0.05)  # past the file system's clock tick: the new file has another mtime
    _glove(Path(path), 7)
    new = _words(path).fit()
    assert skembed.cache_info()["models_loaded"] == 1 and _loads() == loads + 2
    assert new.transform([["cat"]]).to_numpy().tolist() == [[7.0, 7.0]]
    assert old.fit().transform([["cat"]]).to_numpy().tolist() == [[7.0, 7.0]]


def test_a_fitted_estimator_whose_files_changed_width_says_to_fit_again(word_files):
    """Rewritten files are used (the same width: new vectors); files of another width make
    transform raise instead of giving rows the next step cannot read."""
    (path,) = word_files(1)
    emb = _words(path).fit()
    time.sleep(0.05)  # past the file system's clock tick: the new file has another mtime
    _glove(Path(path), 3)
    assert emb.transform([["cat"]]).to_numpy().tolist() == [[3.0, 3.0]]
    time.sleep(0.05)
    Path(path).write_text("the 1 1 1\ncat 2 2 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="changed since it was fitted: .* 3 features .* not 2"):
        emb.transform([["cat"]])
    assert emb.fit().transform([["cat"]]).to_numpy().tolist() == [[2.0, 2.0, 2.0]]


def test_a_fitted_estimator_keeps_serving_after_its_files_are_removed(tmp_path, tiny_model):
    """The model an estimator holds still serves when its files are removed after loading
    (a temporary folder cleaned up, a checkout moved); an estimator that must read them
    again (unpickled) says which files are missing."""
    import pickle
    import shutil

    from skembed import TransformerEmbeddings

    folder = tmp_path / "model"
    shutil.copytree(tiny_model("bert"), folder)
    emb = TransformerEmbeddings(str(folder), device="cpu").fit()
    before = emb.transform(["a short text"]).to_numpy()
    renamed = TransformerEmbeddings(str(folder), device="cpu").fit()
    renamed.set_params(model=str(tmp_path / "elsewhere"))  # its files are there: not served
    with pytest.raises((OSError, ValueError), match="Could not find transformer model folder"):
        renamed.transform(["a short text"]).to_numpy()
    saved = pickle.dumps(emb)
    shutil.rmtree(folder)
    np.testing.assert_array_equal(emb.transform(["a short text"]).to_numpy(), before)
    skembed.clear_cache()
    with pytest.raises((OSError, ValueError), match="Could not find transformer model folder"):
        pickle.loads(saved).transform(["a short text"]).to_numpy()
