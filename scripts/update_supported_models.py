"""Rewrite README.md's supported-models list from the adapter registry (run it after adding an
adapter: ``python scripts/update_supported_models.py``; ``tests/test_adapters.py`` checks the list).

The list lies between ``<!-- supported-models ... -->`` and ``<!-- /supported-models -->``; it is
``avlegrad.explain.adapters.supported_models_markdown()``: one line per adapter of the package.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's avlegrad

from avlegrad.explain.adapters import supported_models_markdown  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> int:
    text = README.read_text()
    start = text.index("\n", text.index("<!-- supported-models")) + 1
    end = text.index("<!-- /supported-models -->")
    new = text[:start] + supported_models_markdown() + "\n" + text[end:]
    if new != text:
        README.write_text(new)
    print(f"{README}: {'updated' if new != text else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
