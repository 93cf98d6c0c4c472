"""Dependencies run one way (ARCHITECTURE.md): the import-linter contract holds, and no module imports part of
hftoolkit inside a function except the few marked `# heavy:` (transformers' Trainer, ~4 s to import, loaded
when training or encoder evaluation starts so that checks fail in well under a second)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hftoolkit"


def function_level_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hftoolkit") \
                        and "# heavy:" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.module}")
                if isinstance(node, ast.Import) and any(a.name.startswith("hftoolkit") for a in node.names):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_no_hidden_imports_inside_functions():
    assert function_level_imports() == []


def test_the_layer_contract_holds():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout


def test_the_command_line_stays_instant():
    """Parsing and bad input load neither torch nor transformers."""
    code = ("import sys, hftoolkit.cli as c; c.main(['recipes', 'show', 'nothere']); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
    assert "recipe 'nothere' is neither a file nor a bundled recipe" in done.stderr
