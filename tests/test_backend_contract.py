"""The backend contract, checked where features enter faceaudit, and `faceaudit.testing.check_backend`.

Broken backends are real plugins: each test installs a small package (a module
and its ``*.dist-info`` with an entry point) on ``sys.path``, so faceaudit finds
it through ``importlib.metadata`` exactly as it finds an installed plugin.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceaudit.backends import backend_for_path, layer_table, list_backends, open_model
from faceaudit.cli import main
from faceaudit.errors import BackendError, FaceAuditError, ModelError
from faceaudit.features import extract_features
from faceaudit.testing import BackendCheckError, check_backend
from helpers import install_plugin

TOY_SOURCE = '''
from pathlib import Path

import numpy as np

from faceaudit.backends import Backend, InputSpec, LayerInfo, PrecomputedFeatures
from faceaudit.errors import ModelError


class Toy(Backend):
    """A 16x16 "model": feat = 4 channel means of the image, emb = 2 of them."""

    name = "{name}"
    suffixes = {suffixes!r}
    input_shape = (None, 3, 16, 16)
    feat_shape = (None, 4)

    def __init__(self, path, **options):
        super().__init__(path, **options)
        if not Path(path).read_bytes().startswith(b"TOY"):
            raise ModelError(f"{{path}} is not a toy model; write TOY into it.")
        self._input_spec = InputSpec(height=16, width=16)
        self._layers = [LayerInfo("input", "Input", self.input_shape, 0), LayerInfo("feat", "Mean", self.feat_shape, 1),
                        LayerInfo("emb", "Linear", (None, 2), 2)]
        self._final = "emb"

    def _run(self, batch, names):
        feat = np.concatenate([batch.mean(axis=(2, 3)), batch.std(axis=(2, 3))[:, :1]], axis=1)
        out = {{"feat": feat, "emb": feat[:, :2] * 2.0}}
        return {{n: out[n] for n in names}}


class MissingLayer(Toy):
    def _run(self, batch, names):
        return {{n: v for n, v in super()._run(batch, names).items() if n != "feat"}}


class WrongRows(Toy):
    def _run(self, batch, names):
        return {{n: np.concatenate([v, v[:1]]) for n, v in super()._run(batch, names).items()}}


class WrongDtype(Toy):
    def _run_pooled(self, batch, names, pooling):
        return {{n: v.astype(np.float64) for n, v in super()._run_pooled(batch, names, pooling).items()}}


class NaNs(Toy):
    def _run(self, batch, names):
        out = super()._run(batch, names)
        out["feat"][-1, 0] = np.nan
        return out


class NoFinal(Toy):
    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._final = ""


class TableLies(Toy):
    feat_shape = (None, 5)


class OpensAnything(Toy):
    def __init__(self, path, **options):
        Backend.__init__(self, path, **options)
        self._input_spec = InputSpec(height=16, width=16)
        self._layers = [LayerInfo("input", "Input", self.input_shape, 0), LayerInfo("feat", "Mean", self.feat_shape, 1),
                        LayerInfo("emb", "Linear", (None, 2), 2)]
        self._final = "emb"


class Flaky(Toy):
    calls = 0

    def _run(self, batch, names):
        Flaky.calls += 1
        return {{n: v + Flaky.calls for n, v in super()._run(batch, names).items()}}


class FlatInput(Toy):
    input_shape = (None, 768)   # declares its own flattened input; faceaudit still feeds (N, 3, 16, 16)


class Looked(Toy, PrecomputedFeatures):
    """Precomputed features: a row per path that does not contain 'missing' (its length, repeated)."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._layers = [LayerInfo("feat", "Precomputed", (None, 4), 0), LayerInfo("emb", "Precomputed", (None, 2), 1)]

    def lookup(self, paths, layers):
        ok = np.array(["missing" not in str(p) for p in paths])
        rows = np.array([[float(len(str(p)))] * 4 for p in paths], np.float32)[ok]
        return {{n: rows if n == "feat" else rows[:, :2] for n in layers}}, ok


class OldPrecomputed(Toy):
    """The contract before PrecomputedFeatures: a class attribute and a lookup method, no declaration."""

    precomputed = True

    def lookup(self, paths, layers):
        return Looked.lookup(self, paths, layers)
'''

BROKEN = ("MissingLayer", "WrongRows", "WrongDtype", "NaNs")


@pytest.fixture()
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install test plugins for one test: `install(dist, version, module, source, {entry: obj})`."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def install(dist: str, version: str, module: str, source: str, entry_points: dict[str, str]) -> None:
        install_plugin(root, dist, version, module, entry_points, source)
        modules.append(module)
        importlib.invalidate_caches()

    yield install
    for m in modules:
        sys.modules.pop(m, None)


@pytest.fixture()
def toy(plugin_path: Callable[..., None]) -> Callable[[str], type]:
    """The toy plugin package `faceaudit-toy 1.2.3`: one entry point per class, named like the class."""
    classes = ("Toy", *BROKEN, "NoFinal", "TableLies", "OpensAnything", "Flaky", "FlatInput", "Looked",
               "OldPrecomputed")
    plugin_path("faceaudit-toy", "1.2.3", "fa_toy", TOY_SOURCE.format(name="toy", suffixes=(".toy",)),
                {c.lower(): c for c in classes})
    module = importlib.import_module("fa_toy")
    for c in classes[1:]:  # entry-point name and class name agree, as check_backend asks; own suffixes
        getattr(module, c).name = c.lower()
        getattr(module, c).suffixes = (f".{c.lower()}.toy",)
    return lambda name: getattr(module, name)


def _model_file(folder: Path, name: str = "m.toy") -> Path:
    path = folder / name
    path.write_bytes(b"TOY model")
    return path


def _faces(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)


# --------------------------------------------------------------------------- checked where results enter


@pytest.mark.parametrize("broken", BROKEN)
def test_broken_backend_output_is_a_backend_error_naming_the_package(
    broken: str, toy: Callable[[str], type], tmp_path: Path
) -> None:
    model = open_model(_model_file(tmp_path), backend=broken.lower())
    with pytest.raises(BackendError) as err:
        model.extract(_faces(), ["input", "feat", "emb"])
    msg = str(err.value)
    assert f"'{broken.lower()}' backend (package faceaudit-toy 1.2.3)" in msg and "bug in that backend" in msg
    assert "'feat'" in msg
    assert not isinstance(err.value, FaceAuditError)  # not the user's input


def test_working_toy_backend_passes(toy: Callable[[str], type], tmp_path: Path) -> None:
    model = open_model(_model_file(tmp_path), backend="toy")
    out = model.extract(_faces(), ["input", "feat", "emb"])
    assert {k: v.shape for k, v in out.items()} == {"input": (3, 192), "feat": (3, 4), "emb": (3, 2)}
    assert model.provenance == {"backend": "toy", "package": "faceaudit-toy", "version": "1.2.3"}


def test_wrong_rows_refused_by_extract_features_too(toy: Callable[[str], type], tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(p)
        paths.append(p)
    model = open_model(_model_file(tmp_path), backend="wrongrows")
    with pytest.raises(BackendError, match="returned 2 rows for layer 'feat' for a batch of 1 images"):
        extract_features(model, paths, ["feat", "emb"], progress=False)


def test_precomputed_features_are_a_declared_capability(toy: Callable[[str], type], tmp_path: Path) -> None:
    """A PrecomputedFeatures backend is looked up by path (no image is opened); the old class flag is refused."""
    from faceaudit.backends import PrecomputedFeatures, layer_table

    model = open_model(_model_file(tmp_path), backend="looked")
    assert isinstance(model, PrecomputedFeatures)
    assert not isinstance(open_model(_model_file(tmp_path)), PrecomputedFeatures)
    assert [l.shape for l in model.layers()] == [(None, 4), (None, 2)]  # no input layer replaced by the image shape
    assert [r["dim"] for r in layer_table(model)] == [4, 2]
    paths = [tmp_path / "no" / "a.jpg", tmp_path / "missing.jpg", tmp_path / "no" / "bb.jpg"]  # none exists
    fs = extract_features(model, paths, ["feat", "emb"], progress=False)
    assert fs.ok.tolist() == [True, False, True] and "no row for this image" in fs.failed[0][1]
    np.testing.assert_array_equal(fs.features["emb"][:, 0], [len(str(paths[0])), len(str(paths[2]))])
    with pytest.raises(BackendError, match="precomputed = True, which faceaudit no longer reads; declare .*"
                                           "subclassing faceaudit.backends.PrecomputedFeatures"):
        open_model(_model_file(tmp_path), backend="oldprecomputed")


def test_unset_final_layer_is_a_backend_error(toy: Callable[[str], type], tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"faceaudit-toy 1\.2\.3\) set no valid final layer"):
        open_model(_model_file(tmp_path), backend="nofinal")


def test_cli_reports_a_backend_bug_with_exit_1(toy: Callable[[str], type], tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    rows = ["path,sex"]
    for i in range(12):
        Image.fromarray(np.full((16, 16, 3), 10 * i, np.uint8)).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'female' if i % 2 else 'male'}")
    (folder / "faces.csv").write_text("\n".join(rows) + "\n")
    model = _model_file(tmp_path)
    for backend, needle in (("missinglayer", "left out the requested layer(s) 'feat'"),
                            ("wrongrows", "returned 2 rows for layer 'feat'")):
        result = CliRunner().invoke(main, ["run", str(model), "--backend", backend, "--data",
                                           str(folder / "faces.csv"), "--attrs", "sex", "--layers", "feat,emb",
                                           "--out", str(tmp_path / "out"), "--quick"])
        assert result.exit_code == 1, result.output
        assert "backend error:" in result.output and needle in result.output
        assert "faceaudit-toy 1.2.3" in result.output and "bug in that backend" in result.output
        assert "Traceback" not in result.output
    layers = CliRunner().invoke(main, ["layers", str(model), "--backend", "nofinal"])
    assert layers.exit_code == 1 and "backend error:" in layers.output


def test_reports_record_the_plugin_package_and_version(toy: Callable[[str], type], tmp_path: Path) -> None:
    import json

    from test_report_data import full_report

    from faceaudit.audit import environment_versions, model_provenance
    from faceaudit.report import load_report, render_html, write_report

    model = open_model(_model_file(tmp_path), backend="toy")
    provenance = model_provenance(model)
    assert provenance == {"backend_package": "faceaudit-toy", "backend_version": "1.2.3"}
    env = environment_versions((), [model], ["mine"])
    assert env["plugins"] == "faceaudit-toy 1.2.3 (backend toy)"
    assert environment_versions((), [open_model(_model_file(tmp_path, "m.flatinput.toy"))], ["mine"])["plugins"] \
        == "faceaudit-toy 1.2.3 (backend flatinput)"
    report = full_report()
    report["model"].update(backend="toy", **provenance)
    report["environment"] = {**report.get("environment", {}), **env}
    html_path, json_path = write_report(report, tmp_path / "out")
    written = json.loads(json_path.read_text())
    assert written["model"]["backend_package"] == "faceaudit-toy" and written["model"]["backend_version"] == "1.2.3"
    assert written["environment"]["plugins"] == "faceaudit-toy 1.2.3 (backend toy)"
    html = html_path.read_text()
    assert "faceaudit-toy 1.2.3</code>" in html and "faceaudit-toy 1.2.3 (backend toy)" in html
    assert render_html(load_report(json_path)) == html
    old = full_report()  # a report written before these keys existed still loads and renders
    assert "backend_package" not in load_report_dict(old)["model"]


def load_report_dict(report: dict) -> dict:
    from faceaudit.report.schema import AuditResult

    return AuditResult.from_dict(report).to_dict()


# --------------------------------------------------------------------------- the input layer


def test_layer_table_shows_what_is_extracted_for_the_input(toy: Callable[[str], type], tmp_path: Path) -> None:
    model = open_model(_model_file(tmp_path), backend="flatinput")
    assert model.layers()[0].shape == (None, 3, 16, 16)  # faceaudit's face, not the declared (None, 768)
    for pooling, want in (("avg", 192), ("flatten", 768), ("grid2", 12)):
        table = {r["name"]: r["dim"] for r in layer_table(model, pooling)}
        got = model.extract(_faces(2), ["input", "feat"], pooling=pooling)
        assert table["input"] == got["input"].shape[1] == want
        assert table["feat"] == got["feat"].shape[1] == 4


# --------------------------------------------------------------------------- suffix precedence


def test_longest_suffix_wins_and_ties_are_refused(plugin_path: Callable[..., None], tmp_path: Path) -> None:
    plugin_path("faceaudit-alpha", "1.0", "fa_alpha", TOY_SOURCE.format(name="alpha", suffixes=(".npy", ".toy")),
                {"alpha": "Toy"})
    plugin_path("faceaudit-beta", "2.0", "fa_beta", TOY_SOURCE.format(name="beta", suffixes=(".b.toy",)),
                {"beta": "Toy"})
    plugin_path("faceaudit-gamma", "3.0", "fa_gamma", TOY_SOURCE.format(name="gamma", suffixes=(".toy",)),
                {"gamma": "Toy"})
    assert backend_for_path("m.B.toy") == "beta"      # .b.toy is longer than .toy
    assert backend_for_path("m.npy") == "alpha"
    with pytest.raises(ModelError) as err:
        backend_for_path("m.toy")                      # alpha and gamma both declare .toy
    msg = str(err.value)
    assert "'alpha' (package faceaudit-alpha 1.0)" in msg and "'gamma' (package faceaudit-gamma 3.0)" in msg
    assert "--backend" in msg
    assert open_model(_model_file(tmp_path), backend="gamma").backend_name == "gamma"
    result = CliRunner().invoke(main, ["layers", str(_model_file(tmp_path))])
    assert result.exit_code == 2 and "--backend" in result.output


def test_example_plugin_suffix_beats_the_features_plugin() -> None:
    installed = {b.name for b in list_backends()}
    if not {"pcaface", "features"} <= installed:
        pytest.skip("install plugins/faceaudit-features and plugins/faceaudit-example-backend (see README Set-up)")
    assert backend_for_path("eigenfaces.pcaface.npz") == "pcaface"
    assert backend_for_path("eigenfaces.npz") == "features"


# --------------------------------------------------------------------------- check_backend


def test_check_backend_passes_a_conforming_backend(toy: Callable[[str], type], tmp_path: Path) -> None:
    assert check_backend(toy("Toy"), _model_file(tmp_path))[-1] == "wrong_file"


@pytest.mark.parametrize(
    "name, check, needle",
    [
        ("MissingLayer", "rows_and_dtype", "left out the requested layer(s) 'feat'"),
        ("WrongRows", "rows_and_dtype", "returned 2 rows"),
        ("WrongDtype", "rows_and_dtype", "dtype float64"),
        ("NaNs", "rows_and_dtype", "NaN"),
        ("NoFinal", "open", "set no valid final layer"),
        ("TableLies", "layer_table", "dim 5"),
        ("OpensAnything", "wrong_file", "was opened without error"),
        ("Flaky", "determinism", "second call"),
    ],
)
def test_check_backend_finds_each_broken_promise(
    name: str, check: str, needle: str, toy: Callable[[str], type], tmp_path: Path
) -> None:
    with pytest.raises(BackendCheckError) as err:
        check_backend(toy(name), _model_file(tmp_path, f"m.{name.lower()}.toy"))
    assert f"[{check}]" in str(err.value) and needle in str(err.value)


def test_check_backend_wants_registration(toy: Callable[[str], type], tmp_path: Path) -> None:
    unregistered = type("Unregistered", (toy("Toy"),), {})
    with pytest.raises(BackendCheckError, match=r"\[registration\].*entry-point group"):
        check_backend(unregistered, _model_file(tmp_path))


# --------------------------------------------------------------------------- command line


def test_plugins_lists_suffixes() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("  onnx "))
    assert ".onnx" in line
    assert ".pt2" in next(l for l in result.output.splitlines() if l.startswith("  torch "))


def test_layers_text_shows_dim_and_depth(toy: Callable[[str], type], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["layers", str(_model_file(tmp_path)), "--backend", "flatinput"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["auto", "name", "kind", "shape", "dim", "depth"]
    assert lines[1].split()[-2:] == ["192", "0.00"] and "Nx3x16x16" in lines[1]
    assert lines[2].split()[-2:] == ["4", "0.50"]
    assert lines[3].split()[-3:] == ["2", "1.00", "(final)"]
    flat = CliRunner().invoke(main, ["layers", str(_model_file(tmp_path)), "--backend", "flatinput",
                                     "--pooling", "flatten"])
    assert flat.output.splitlines()[1].split()[-2:] == ["768", "0.00"]


def test_python_dash_m_faceaudit() -> None:
    from faceaudit import __version__

    done = subprocess.run([sys.executable, "-m", "faceaudit", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"faceaudit, version {__version__}"


def test_plugin_guide_example_is_the_tested_plugin() -> None:
    """docs/plugins.md's copy-pasteable plugin is, file for file, the package CI installs and tests, and the
    README's set-up installs it as CI does."""
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    assert "(docs/plugins.md)" in readme  # the README's plugin section points to the guide
    guide = (repo / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = [b.split("\n", 1)[1] for b in guide.split("```")[1::2]]
    plugin = repo / "plugins" / "faceaudit-example-backend"
    for rel in ("pyproject.toml", "faceaudit_example_backend/__init__.py", "tests/test_pcaface.py"):
        text = (plugin / rel).read_text(encoding="utf-8")
        assert text in blocks, f"docs/plugins.md lacks an exact copy of {rel}"
    ci = (repo / ".ci" / "run").read_text(encoding="utf-8")
    install = next(l for l in ci.splitlines() if l.startswith("pip install") and "-e" in l)
    assert "./plugins/faceaudit-example-backend" in install
    assert install.replace("pip install -q ", "pip install ") in readme
