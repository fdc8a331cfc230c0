"""Sessions: tests, lint, typecheck, demo, docs, bench, wheel. Torch is pinned by constraints.txt."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs", "wheel"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "virtualenv"

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, *extra: str) -> None:
    session.install(*CONSTRAINTS, "-e", f".[{','.join(extra)}]" if extra else ".")


@nox.session(python=False if os.environ.get("FTRAIN_NOX_NO_VENV") else None)
def tests(session: nox.Session) -> None:
    """The test suite (all of it, with doctests and examples)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs, env={"OMP_NUM_THREADS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check; the import-linter layers contract (pyproject.toml)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    paths = [
        p for p in ("ftrain", "tests", "examples", "benchmarks", "noxfile.py") if os.path.exists(p)
    ]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    # Reads ftrain's source from this folder: neither ftrain nor torch is installed here.
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package."""
    _install(session)
    session.install("mypy>=1.10")
    session.run("mypy", "ftrain")


@nox.session
def demo(session: nox.Session) -> None:
    """Train the demo classifier on generated data (CPU) and print validation accuracy."""
    _install(session)
    session.run("python", "examples/demo.py", *session.posargs, env={"OMP_NUM_THREADS": "1"})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (strict: a broken link or docstring fails it).

    ``nox -s docs -- serve`` serves it on http://127.0.0.1:8000 instead, rebuilt on edits.
    """
    # mkdocstrings reads ftrain's source statically, so torch is not needed here; the
    # python blocks of the pages run in the tests session (tests/test_docs.py).
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff")
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:  # nox -s docs -- serve: the site on 127.0.0.1:8000
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
        return
    session.run("mkdocs", "build", "--strict", *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """The overhead benchmarks: hand-written loop vs ftrain (vs Lightning if installed)."""
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the wheel, install it, and run the package tests against it from a temp dir.

    A file missing from the wheel (a subpackage, py.typed) fails here, not in users' hands.
    """
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", "dist/")
    wheels = sorted(f for f in os.listdir("dist") if f.endswith(".whl"))
    session.install(*CONSTRAINTS, f"dist/{wheels[-1]}", "pytest", "hypothesis", "pyyaml")
    tmp = session.create_tmp()
    session.run("rm", "-rf", f"{tmp}/tests", external=True)
    session.run("cp", "-r", "tests", tmp, external=True)
    session.chdir(tmp)
    session.run(
        "python",
        "-c",
        "import ftrain, pathlib, sys; "
        "assert 'site-packages' in ftrain.__file__, ftrain.__file__; "
        "assert (pathlib.Path(ftrain.__file__).parent / 'py.typed').exists()",
    )
    package_tests = [
        "tests/test_import.py", "tests/test_state.py", "tests/test_step.py",
        "tests/test_combinators.py", "tests/test_checkpoint_io.py", "tests/test_loggers.py",
        "tests/test_fit.py", "tests/test_tune.py",
    ]  # fmt: skip
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *package_tests)
