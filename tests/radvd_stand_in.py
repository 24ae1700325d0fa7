"""radvd stood in for where its systemd unit cannot run: the room router's runbook in the
contract test's world (tests/unit/test_contract.py) and in a namespace of its own
(tests/integration/test_room_router_routes.py). Its configuration file is real (the path
the runbook is given); whether the unit is enabled and active, and whether RAs leave the
room's interface, are this object's. radvd itself: test_room_router (``radvd
--configtest``) and the room lab."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from opslib.core.errors import ApplyError
from opslib.host.ifupdown import file_io
from opslib.host.router import radvd


@dataclass
class RadvdStandIn:
    active: bool = False  # enabled and active
    fail: bool = False  # its install raises, as a unit that does not start would

    def observe(self, conf: Path = radvd.CONF) -> radvd.Service:
        text = conf.read_text() if conf.exists() else None
        return radvd.Service(text, self.active, self.active)

    def install(self, text: str, conf: Path = radvd.CONF) -> None:
        if self.fail:
            raise ApplyError("radvd: stood in to fail")
        conf.write_text(text)
        self.active = True

    def put_back(self, found: radvd.Service, conf: Path = radvd.CONF) -> str:
        file_io.put_back(str(conf), found.text)
        self.active = found.active
        return "radvd as found"

    def patch(self, m: pytest.MonkeyPatch) -> RadvdStandIn:
        """radvd's adapter calls answered by this object, RAs always leaving."""
        m.setattr(radvd, "observe", self.observe)
        m.setattr(radvd, "install", self.install)
        m.setattr(radvd, "put_back", self.put_back)
        m.setattr(radvd, "installed", lambda: True)
        m.setattr(radvd, "sent", lambda _iface, _netns="": 1)
        m.setattr(radvd, "wait_sent", lambda *_a, **_kw: "")
        return self
