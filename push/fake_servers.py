"""TEST SERVERS ONLY: start the fake FCM and fake APNs together with generated test
credentials (an FCM service-account JSON whose token_uri points at the fake, an APNs .p8
key, the fake APNs's CA file) and the CRM_FCM_* / CRM_APNS_* settings that point the real
senders at them. For tests and the demo; never a production path."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from push.fake_apns import FakeApns, FakeApnsState, write_self_signed, write_test_key
from push.fake_fcm import FakeFcmState, create_app

APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC = "TESTKEY001", "TESTTEAM01", "com.example.shop"


def service_account(token_uri: str, project_id: str = "demo-shop") -> dict[str, str]:
    """A TEST service-account JSON (fresh RSA key) whose token_uri points at a fake FCM."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": "test",
        "private_key": rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(),
        "client_email": f"crm@{project_id}.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakePush:
    folder: Path
    fcm: FakeFcmState = field(default_factory=FakeFcmState)
    apns: FakeApnsState | None = None
    env: dict[str, str] = field(default_factory=dict)
    _uvicorn: uvicorn.Server | None = None
    _fcm_thread: threading.Thread | None = None
    _apns: FakeApns | None = None

    def start(self, fcm_port: int = 0, apns_port: int = 0) -> dict[str, str]:
        """Start both fakes; returns the settings to export."""
        self.folder.mkdir(parents=True, exist_ok=True)
        port = fcm_port or _free_port()
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            create_app(self.fcm), host="127.0.0.1", port=port, log_level="warning"))
        self._fcm_thread = threading.Thread(target=self._uvicorn.run, daemon=True)
        self._fcm_thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._fcm_thread.is_alive():
                raise RuntimeError(f"fake FCM did not start on port {port}")
            time.sleep(0.02)
        fcm_url = f"http://127.0.0.1:{port}"
        creds = self.folder / "fcm-service-account.json"
        creds.write_text(json.dumps(service_account(f"{fcm_url}/token")))
        p8 = self.folder / f"AuthKey_{APNS_KEY_ID}.p8"
        ca, tls_key = self.folder / "fake-apns-ca.pem", self.folder / "fake-apns-tls.key"
        key = write_test_key(p8)
        write_self_signed(ca, tls_key)
        self.apns = FakeApnsState(key.public_key(), APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC)
        self._apns = FakeApns(self.apns, ca, tls_key, apns_port)
        apns_url = self._apns.start()
        self.env = {
            "CRM_FCM_CREDENTIALS": str(creds), "CRM_FCM_URL": fcm_url,
            "CRM_APNS_KEY": str(p8), "CRM_APNS_KEY_ID": APNS_KEY_ID,
            "CRM_APNS_TEAM_ID": APNS_TEAM_ID, "CRM_APNS_TOPIC": APNS_TOPIC,
            "CRM_APNS_URL": apns_url, "CRM_APNS_CA_FILE": str(ca),
        }
        return self.env

    def delivery_ids(self) -> list[str]:
        """The delivery id of every push either fake received (FCM data, APNs custom keys),
        in arrival order per service, repeats included."""
        apns = self.apns.received if self.apns is not None else []
        return ([m["data"]["delivery_id"] for m in self.fcm.received]
                + [m["payload"]["delivery_id"] for m in apns])

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._fcm_thread is not None:
            self._fcm_thread.join(5)
        if self._apns is not None:
            self._apns.stop()
