"""Bad configs and arguments raise the right exception, with the field named and the Rust
error's text."""

from __future__ import annotations

import json

import pytest

import hermes_p2p


async def test_bad_field_raises_config_error_naming_it(pair):
    cfg = json.loads(pair.py_config.read_text())
    cfg["listen"] = ["/ip4/127.0.0.1/tcp/not-a-port"]
    bad = pair.tmp / "bad.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(hermes_p2p.ConfigError) as e:
        async with hermes_p2p.Node.start(bad):
            pass
    assert e.value.field == "listen[0]"
    assert str(e.value).startswith(f"{bad}: `listen[0]`: ")
    assert isinstance(e.value, hermes_p2p.HermesError)


async def test_unknown_field_is_named(pair):
    cfg = json.loads(pair.py_config.read_text())
    cfg["messages"]["max_sise"] = 5
    bad = pair.tmp / "typo.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(hermes_p2p.ConfigError) as e:
        await hermes_p2p.Node.start(bad)
    assert e.value.field is not None and "max_sise" in str(e.value)


async def test_missing_file_is_a_config_error_without_field(tmp_path):
    with pytest.raises(hermes_p2p.ConfigError) as e:
        await hermes_p2p.Node.start(tmp_path / "nope.json")
    assert e.value.field is None
    assert "cannot read config file" in str(e.value)


async def test_second_node_on_same_data_dir_is_a_storage_error(pair):
    async with hermes_p2p.Node.start(pair.py_config):
        with pytest.raises(hermes_p2p.StorageError) as e:
            await hermes_p2p.Node.start(pair.py_config)
        assert "data dir in use" in str(e.value)


async def test_calls_after_shutdown_raise_stopped(pair):
    node = await hermes_p2p.Node.start(pair.py_config)
    await node.shutdown()
    await node.shutdown()  # idempotent
    with pytest.raises(hermes_p2p.StoppedError) as e:
        await node.identity()
    assert str(e.value) == "the runtime has been shut down"
