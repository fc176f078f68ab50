"""Kafka connection settings (brokers, security, librdkafka properties) shared by the Kafka exporter
(exporters/kafka.py) and the aggregator's Kafka source (collector/sources/kafka.py)."""

from __future__ import annotations

import logging
import time
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from siemhub.collector.core.settings import Strict

log = logging.getLogger("siemhub.kafka")


class SaslConfig(Strict):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str
    password: SecretStr  # use ${ENV}; SecretStr keeps it out of reprs and logs


class TlsConfig(Strict):
    ca_file: str | None = Field(None, description="CA bundle (PEM) to verify the brokers")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(None, description="client private key (PEM)")
    key_password: SecretStr | None = None
    verify_hostname: bool = True
    insecure: bool = Field(False, description="skip certificate verification entirely (logged as a warning)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class SecurityConfig(Strict):
    protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = "plaintext"
    sasl: SaslConfig | None = None
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if self.protocol.startswith("sasl") and self.sasl is None:
            raise ValueError(f"protocol {self.protocol} needs a 'sasl' section")
        if not self.protocol.startswith("sasl") and self.sasl is not None:
            raise ValueError("'sasl' needs protocol sasl_plaintext or sasl_ssl")
        if self.tls is not None and not self.protocol.endswith("ssl"):
            raise ValueError("'tls' needs protocol ssl or sasl_ssl")
        return self


PropertyValue = str | int | float | bool


class KafkaConnection(Strict):
    brokers: list[str] = Field(min_length=1, description="bootstrap servers, host:port")
    security: SecurityConfig = SecurityConfig()
    # Any librdkafka property siemhub does not name; applied last, so it wins. Values may come from
    # ${ENV}; they are never logged.
    properties: dict[str, PropertyValue] = {}


def client_config(conn: KafkaConnection) -> dict[str, PropertyValue]:
    """librdkafka settings for the brokers and security of `conn` (secrets included: never log it)."""
    sec = conn.security
    conf: dict[str, PropertyValue] = {
        "bootstrap.servers": ",".join(conn.brokers),
        "security.protocol": sec.protocol.upper(),
    }
    if sec.sasl is not None:
        conf["sasl.mechanism"] = sec.sasl.mechanism
        conf["sasl.username"] = sec.sasl.username
        conf["sasl.password"] = sec.sasl.password.get_secret_value()
    if sec.tls is not None:
        t = sec.tls
        if t.ca_file:
            conf["ssl.ca.location"] = t.ca_file
        if t.cert_file:
            conf["ssl.certificate.location"] = t.cert_file
            conf["ssl.key.location"] = t.key_file or ""
        if t.key_password is not None:
            conf["ssl.key.password"] = t.key_password.get_secret_value()
        # Verification is on by default (librdkafka verifies the broker certificate and, with "https",
        # its host name); turning either off is said out loud every time the client is built.
        conf["ssl.endpoint.identification.algorithm"] = "https" if t.verify_hostname and not t.insecure else "none"
        if t.insecure:
            conf["enable.ssl.certificate.verification"] = False
            log.warning("kafka: TLS certificate verification is OFF (tls.insecure: true)")
        elif not t.verify_hostname:
            log.warning("kafka: TLS host name verification is OFF (tls.verify_hostname: false)")
    conf.update(conn.properties)
    return conf


class LibrdkafkaLog:
    """librdkafka's log lines into Python logging. Connection failures are expected while a broker
    restarts and librdkafka repeats them every second: they go to INFO, at most once per minute per
    kind, so a broker outage does not flood the agent's log (delivery metrics tell the real story)."""

    _QUIET = ("Connection refused", "Disconnected", "Connect to", "Broker transport failure", "brokers are down")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last: dict[str, float] = {}

    def log(self, level: int, msg: str, *args) -> None:
        text = msg % args if args else msg
        quiet = next((q for q in self._QUIET if q in text), None)
        if quiet is not None:
            now = time.monotonic()
            if now - self._last.get(quiet, -1e9) < 60:
                return
            self._last[quiet] = now
            level = min(level, logging.INFO)
        self.logger.log(level, "%s", text)
