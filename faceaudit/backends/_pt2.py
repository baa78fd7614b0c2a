"""Open a torch.export archive (.pt2) without running code stored in it.

`torch.export.load` unpickles several members of the archive with
``weights_only=False`` (sample inputs after a failed weights-only try, pickled
weights and constants, opaque objects), loads compiled AOTInductor libraries,
and hands the symbolic shape expressions of the program to `sympy.sympify`,
which evaluates Python. Any of these runs whatever the file's author wrote.

`load_export_program` reads the file once into memory, checks each of those
members with the same reader torch uses, and only then gives the same bytes to
`torch.export.load`: every pickle must load with ``weights_only=True``
(plain tensors and containers), no compiled library or pickled custom object
may be present, and every symbolic expression must use only the names sympy
prints for shapes. Anything else is refused, naming the member.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faceaudit.errors import ModelError

# names srepr() prints for shape expressions, and torch's own sympy functions
_SYMPY_NAMES = frozenset(
    """Symbol Integer Float Rational Add Mul Pow Max Min Mod Abs floor ceiling sqrt Eq Ne Lt Le Gt Ge
    Equality Unequality StrictLessThan StrictGreaterThan LessThan GreaterThan And Or Not Xor Piecewise
    ExprCondPair ITE BooleanTrue BooleanFalse true false True False Infinity NegativeInfinity IntInfinity
    NegativeIntInfinity oo zoo nan NaN Zero One NegativeOne Half Tuple precision integer positive negative
    nonnegative nonpositive real finite infinite zero nonzero even odd rational irrational commutative
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv IntTrueDiv FloatTrueDiv
    LShift RShift IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat
    FloatPow PowByNatural Identity OpaqueUnaryFn_sqrt""".split()
)
_TOKEN = re.compile(
    r"\s+|(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)|(?P<str>'[A-Za-z0-9_.+-]*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/%(),=<>!&|~^])"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}\d+")


def _refuse(path: Path, member: str, why: str) -> ModelError:
    return ModelError(
        f"{path} was refused for safety: {member} {why}. Opening it could run code stored in the file. "
        "Export the model again with torch.export.save from code you trust, or, only for a file you trust, "
        "pass --trust-pickle on the command line (trust_pickle=True in Python)."
    )


def _safe_expression(expr: str) -> bool:
    """True if `expr` has only numbers, plain quoted names, operators and the names of shape expressions."""
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return False
        name = m.group("name")
        if name is not None and name not in _SYMPY_NAMES and not _SYMBOL_NAME.fullmatch(name):
            return False
        pos = m.end()
    return True


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str":
                yield value if isinstance(value, str) else repr(value)
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)


def _weights_only(data: bytes) -> bool:
    import torch

    if not data:
        return True
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def check_export_archive(path: Path, data: bytes) -> None:
    """Raise ModelError unless `data` (the bytes of `path`) opens without running code it carries."""
    import torch
    from torch.export.pt2_archive import constants as c

    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path} is not a torch.export archive ({exc}). Save the model with torch.export.save.") from exc
    if "version" in names:  # torch.export.load's fallback for pre-2.7 archives unpickles without checks
        raise _refuse(path, "it", "uses the torch.export layout of torch before 2.7, which cannot be checked")
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        members = set(reader.get_all_records())
    except Exception as exc:
        raise ModelError(
            f"{path} is not a readable torch.export archive ({type(exc).__name__}: {exc}). Save it again with "
            "torch.export.save."
        ) from exc

    def read(member: str) -> bytes:
        return bytes(reader.get_record(member))

    if any(m.startswith(c.AOTINDUCTOR_DIR) for m in members):
        raise _refuse(path, f"its {c.AOTINDUCTOR_DIR} folder", "holds compiled native code, which faceaudit does "
                      "not load")
    models = [m[len(c.MODELS_DIR):-len(".json")] for m in members if m.startswith(c.MODELS_DIR) and m.endswith(".json")]
    for model in models:
        program = c.MODELS_FILENAME_FORMAT.format(model)
        try:
            tree = json.loads(read(program))
        except (ValueError, RecursionError) as exc:
            raise ModelError(f"{path}: {program} is not valid JSON ({exc}). Save the model again.") from exc
        for expr in _expressions(tree):
            if not _safe_expression(expr):
                raise _refuse(path, f"{program}", f"holds a shape expression that is not plain arithmetic ({expr[:80]!r})")
        sample = c.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample in members and not _weights_only(read(sample)):
            raise _refuse(path, sample, "holds pickled Python objects, not plain tensors")
        for folder, legacy, config_name in (
            (c.WEIGHTS_DIR, f"{c.WEIGHTS_DIR}{model}.pt", c.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)),
            (c.CONSTANTS_DIR, f"{c.CONSTANTS_DIR}{model}.pt", c.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)),
        ):
            if legacy in members:
                if not _weights_only(read(legacy)):
                    raise _refuse(path, legacy, "holds pickled Python objects, not plain tensors")
                continue
            if config_name not in members:
                continue
            try:
                config = json.loads(read(config_name)).get("config", {})
            except (ValueError, AttributeError, RecursionError) as exc:
                raise ModelError(f"{path}: {config_name} is not valid JSON ({exc}). Save the model again.") from exc
            if not isinstance(config, dict) or not all(isinstance(e, dict) for e in config.values()):
                raise ModelError(f"{path}: {config_name} is not a torch.export payload table. Save the model again.")
            for entry in config.values():
                name = str(entry.get("path_name", ""))
                member = folder + name
                if folder == c.CONSTANTS_DIR and not name.startswith(c.TENSOR_CONSTANT_FILENAME_PREFIX):
                    raise _refuse(path, member, "is a pickled custom object, not a tensor")
                if entry.get("use_pickle") and member in members and not _weights_only(read(member)):
                    raise _refuse(path, member, "holds pickled Python objects, not plain tensors")


def load_export_program(path: Path, *, trust_pickle: bool = False) -> Any:
    """The `torch.export.ExportedProgram` in `path`, opened without running code stored in the file.

    With `trust_pickle` the file is given to `torch.export.load` unchecked (for a
    file you trust whose members are not plain tensors).
    """
    import torch

    if trust_pickle:
        return torch.export.load(str(path))
    data = Path(path).read_bytes()
    check_export_archive(Path(path), data)
    return torch.export.load(io.BytesIO(data))  # the same bytes that were checked
