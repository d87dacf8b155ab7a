"""A pipeline saved by an earlier version of the package loads and predicts as it did.

``fixtures/pipeline_layout_v1`` was saved (``nlp.to_disk``) by the code just before the
package was split into subpackages: its ``config.cfg`` names registered functions, and
its component files hold no module paths, so moving modules must not change what it
loads into or what it predicts. ``expected.json`` holds the entities it gave when saved.
It is loaded in a fresh process, so nothing imported by other tests helps it load.
"""
import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "pipeline_layout_v1"

PREDICT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps([[[e.start_char, e.end_char, e.label_] for e in doc.ents] for doc in nlp.pipe(texts)]))
"""


def test_pipeline_saved_before_the_package_layout_changed_loads_and_predicts_the_same(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "nlp")  # loading must not need to write next to the fixture
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf8"))
    result = subprocess.run(
        [sys.executable, "-c", PREDICT, str(tmp_path / "nlp"), json.dumps(expected["texts"])],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected["ents"]
