"""Files that are not YAML text (binary, another encoding) are a ConfigError naming the
file, at the loader and through ``memhil run`` (one line, exit 2, nothing stored)."""

from __future__ import annotations

import pytest

from memhil.cli.app import main as cli_main
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError

NOT_TEXT = {
    "latin1": "protocol: conductance_map\nname: caf\u00e9\n".encode("latin-1"),
    "binary": bytes(range(256)) * 4,
    "utf16": "protocol: conductance_map\n".encode("utf-16"),
}


@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_non_utf8_or_binary_yaml_is_a_config_error_naming_the_file(kind, tmp_path):
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(NOT_TEXT[kind])
    with pytest.raises(ConfigError, match=rf"{kind}\.yaml: <file>: not a UTF-8 text file"):
        load_yaml(path)


@pytest.mark.parametrize("where", ["protocol", "station"])
def test_memhil_run_with_a_binary_file_exits_2_in_one_line(where, tmp_path, capsys):
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(NOT_TEXT["binary"])
    proto = tmp_path / "p.yaml"
    proto.write_text("protocol: conductance_map\n")
    db = tmp_path / "x.db"
    argv = (
        ["run", str(binary), "--sim"]
        if where == "protocol"
        else ["run", str(proto), "--station", str(binary)]
    )
    assert cli_main([*argv, "--db", str(db), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "blob.yaml: <file>: not a UTF-8 text file" in err
