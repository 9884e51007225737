"""Compile a C program beside this scenario into the cell's work directory (the current directory):
``native_build.py SOURCE.c [NAME]``. Prints {"built": path} as its JSON line."""

import json
import os
import subprocess
import sys

src = os.path.join(os.path.dirname(os.path.abspath(__file__)), sys.argv[1])
out = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.splitext(os.path.basename(src))[0])
subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-o", out, src, "-ldl"], check=True)
print(json.dumps({"built": out}))
