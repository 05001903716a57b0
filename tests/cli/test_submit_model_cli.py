"""`medarena submit` sends a model archive unchanged; the server decides by its content.

Reuses the real uvicorn server of test_submit_cli.py (its phase ``prelim`` accepts
predictions only): a model archive is refused with the server's reason, printed by the CLI.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from test_submit_cli import Server, _count, _submit
from test_submit_cli import server as server  # the module-scoped fixture, reused


def test_model_archive_goes_through_the_cli_and_the_server_decides(
    server: Server,
    tmp_path: Path,
) -> None:
    before = _count(server)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.onnx", b"not checked: the phase takes no models")
        zf.writestr("manifest.yaml", "inputs: {channels: [MR]}\n")
    archive = tmp_path / "model.zip"
    archive.write_bytes(buf.getvalue())
    res = _submit(server, server.tokens["ada"], archive)
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())
    assert "model.zip: refused" in err
    assert "phase 'prelim' does not accept model submissions (model.onnx)" in err, err
    assert _count(server) == before
