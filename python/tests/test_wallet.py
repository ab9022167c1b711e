"""Interop with the real `bittensor_wallet` package: a node started from a wallet's hotkey file
has the wallet's address, and signatures made on either side verify on the other."""

from __future__ import annotations

import json
import pathlib

import pytest
from bittensor_wallet import Keypair, Wallet

import hermes_p2p
from conftest import NETUID, free_port, hermes

#: The domain `Node.sign` prefixes to every message (see `Node.sign`).
APP_DOMAIN = b"hermes/app/v1"


def wallet_node(tmp: pathlib.Path, hotkey_file: str, *, register: bool = True) -> pathlib.Path:
    """A node config in `tmp/node` on the dev chain `tmp/chain` whose hotkey is `hotkey_file`
    (registered on the chain unless `register` is false); its path."""
    hermes("init", "--dir", "node", "--port", str(free_port()), "--netuid", str(NETUID),
           "--chain", "chain", cwd=tmp)
    config = tmp / "node" / "hermes.json"
    cfg = json.loads(config.read_text())
    cfg["identity"]["hotkey_file"] = hotkey_file
    config.write_text(json.dumps(cfg))
    if register:
        hermes("devchain", "register", "--config", str(config), "--stake", "1000", cwd=tmp)
    return config


def new_wallet(tmp: pathlib.Path, hotkey: str, password: str | None = None) -> Wallet:
    """A wallet under `tmp/wallets` with a fresh sr25519 hotkey, encrypted with `password` if
    one is given (as btcli writes it)."""
    w = Wallet(name="miner", hotkey=hotkey, path=str(tmp / "wallets"))
    w.create_new_hotkey(use_password=password is not None, hotkey_password=password,
                        overwrite=True, suppress=True)
    return w


async def test_node_started_from_wallet_hotkey_has_its_address_and_signatures_interoperate(
    tmp_path,
):
    wallet = new_wallet(tmp_path, "default")
    other = new_wallet(tmp_path, "other")
    config = wallet_node(tmp_path, wallet.hotkey_file.path)
    msg = b"weights for epoch 7"

    async with hermes_p2p.Node.start(config) as node:
        me = await node.identity()
        assert me.ss58 == wallet.hotkey.ss58_address
        assert me.hotkey == wallet.hotkey.public_key.hex()

        # Hermes signs, bittensor_wallet verifies (with the public key only).
        sig = await node.sign(msg)
        assert len(sig) == 64
        public = Keypair(ss58_address=me.ss58)
        assert public.verify(APP_DOMAIN + msg, sig) is True
        assert public.verify(APP_DOMAIN + msg + b"!", sig) is False
        assert public.verify(msg, sig) is False  # the domain is part of what is signed
        stranger = Keypair(ss58_address=other.hotkey.ss58_address)
        assert stranger.verify(APP_DOMAIN + msg, sig) is False
        flipped = bytearray(sig)
        flipped[10] ^= 0x01
        assert public.verify(APP_DOMAIN + msg, bytes(flipped)) is False

        # bittensor_wallet signs, Hermes verifies.
        theirs = wallet.hotkey.sign(APP_DOMAIN + msg)
        assert node.verify(me.ss58, msg, theirs) is True
        assert node.verify(me.ss58, msg + b"!", theirs) is False
        assert node.verify(other.hotkey.ss58_address, msg, theirs) is False
        assert node.verify(me.ss58, msg, wallet.hotkey.sign(msg)) is False  # no domain
        flipped = bytearray(theirs)
        flipped[10] ^= 0x01
        assert node.verify(me.ss58, msg, bytes(flipped)) is False


async def test_password_encrypted_wallet_hotkey_is_refused_with_a_clear_message(tmp_path):
    wallet = new_wallet(tmp_path, "locked", password="correct horse battery")
    assert pathlib.Path(wallet.hotkey_file.path).read_bytes().startswith(b"$NACL")
    # Not registered: `hermes devchain register` reads the hotkey and would refuse it first.
    config = wallet_node(tmp_path, wallet.hotkey_file.path, register=False)

    with pytest.raises(hermes_p2p.IdentityError) as e:
        await hermes_p2p.Node.start(config)
    text = str(e.value)
    assert wallet.hotkey_file.path in text
    assert "the file is encrypted" in text
    assert "unencrypted hotkey files" in text
    # The error names the file, never the key: no part of the password shows.
    assert "correct horse" not in text
