"""The avlegrad web demo: ``python app.py [--port PORT] [--host 127.0.0.1]`` (see avlegrad/app.py)."""
import sys

from avlegrad.app import main

if __name__ == "__main__":
    sys.exit(main())
