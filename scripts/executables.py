"""The executables cargo built, by target name, from its JSON messages (one per line).

    python3 scripts/executables.py CARGO_JSON NAME...

prints each NAME's executable on a line, in order, and fails naming those cargo built none of
(`cargo build|test|bench ... --message-format=json-render-diagnostics >CARGO_JSON`).
"""
import json
import sys

found = {}
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
        found[msg["target"]["name"]] = msg["executable"]
names = sys.argv[2:]
missing = [name for name in names if name not in found]
if missing:
    sys.exit(f"cargo built no {', '.join(missing)}")
print("\n".join(found[name] for name in names))
