"""compose.yaml and the Dockerfile stay true to the code: the label URL variable, the driver, the commands.

(There is no Docker daemon in CI; this checks what can be checked without one.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from simx.cli import build_parser
from simx.labels import URL_ENV

REPO = Path(__file__).resolve().parents[1]


def test_compose_wires_the_dashboard_to_postgresql():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    dash, db = compose["services"]["dashboard"], compose["services"]["db"]
    url = make_url(dash["environment"][URL_ENV])
    assert url.drivername == "postgresql+psycopg" and url.host == "db"
    assert (url.username, url.password, url.database) == (db["environment"]["POSTGRES_USER"],
                                                          db["environment"]["POSTGRES_PASSWORD"],
                                                          db["environment"]["POSTGRES_DB"])
    assert dash["depends_on"]["db"]["condition"] == "service_healthy" and "healthcheck" in db
    assert "psycopg" in (REPO / "requirements.txt").read_text()  # the driver the URL names is installed


def test_dockerfile_commands_are_real_simx_commands():
    text = (REPO / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    script = cmd[-1]
    parser = build_parser()
    for part in re.split(r"&&", script):
        words = part.replace("exec", "").split()
        assert words[0] == "simx", part
        parser.parse_args(words[1:])  # argparse exits on an unknown command or option
    assert "torch==2.14.1 torchvision==0.29.1" in text  # the pins of requirements.txt
    assert "torch==2.14.1" in (REPO / "requirements.txt").read_text()
