"""docs/http-api.md's curl examples, run as written against Tajikistan's API with both gateways over
the real RabbitMQ: the death notice submitted with curl is receipted by Russia's gateway, its status
turns `receipted`, and its proof checks with `broker audit check-proof`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import pytest

from broker.audit.entry import EntryKind
from broker.exchange.gateway import Gateway
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi, sealed_by

pytestmark = pytest.mark.rabbitmq

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "http-api.md"
RUN_LIMIT_S = 300.0
MARK = "=== block"


def doc_blocks() -> list[str]:
    """The bash blocks of the doc's Examples section, in order."""
    examples = DOC.read_text("utf-8").split("## Examples", 1)[1]
    return re.findall(r"```bash\n(.*?)```", examples, flags=re.S)


def test_the_doc_shows_every_operation_of_the_contract() -> None:
    shown = "\n".join(doc_blocks())
    for path in ("/catalogue\"", "/catalogue/worker.death/1", "/messages\"", "/messages/$MESSAGE_ID?wait",
                 "/receipt", "/proof", "/received", "/envelopes"):  # fmt: skip
        assert path in shown, path


async def test_the_docs_curl_examples_deliver_a_death_notice_to_russia_and_prove_it(
    exchange: ExchangeHarness,
    api_gateways: dict[str, Gateway],
    http_api: Callable[..., Awaitable[HttpApi]],
    tmp_path: Path,
) -> None:
    api = await http_api("TJ")
    work = tmp_path / "caller"
    (work / "docs" / "examples").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "examples" / "death-ru-worker-in-dushanbe.json", work / "docs" / "examples")
    envelope = sealed_by(exchange, "labour_market.report", sender="TJ-MOL", recipient="RU-MINTRUD")
    (work / "envelope.json").write_bytes(envelope.raw)
    script = "set -euo pipefail\n" + "".join(
        f"echo '{MARK} {number}'\n{block}" for number, block in enumerate(doc_blocks())
    )
    env = {
        **os.environ,
        "API": f"{api.url}/v1",
        "TOKEN": api.tokens["TJ-MVD"],
        "MOL_TOKEN": api.tokens["TJ-MOL"],
        "KEYS": str(api.keys_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = (await asyncio.wait_for(process.communicate(), RUN_LIMIT_S))[0].decode()

    assert process.returncode == 0, output
    parts = re.split(rf"^{MARK} (\d+)$", output, flags=re.M)
    blocks = {int(number): text for number, text in zip(parts[1::2], parts[2::2], strict=True)}
    assert '"type":"worker.death"' in blocks[1], output
    message_id = UUID(blocks[2].strip())
    assert '"state":"receipted"' in blocks[3]
    assert '"verdict":"accepted"' in blocks[4]
    assert "OK entry" in blocks[5]
    assert '"items":[' in blocks[6]
    assert f'"message_id":"{envelope.envelope.id}"' in blocks[7]
    assert '"reason":"auth.forbidden"' in blocks[8]
    # Russia's gateway received and logged the notice; Tajikistan's outbox has it receipted.
    received = await api_gateways["RU"].audit.find(message_id, kinds=[EntryKind.RECEIVED])
    assert len(received) == 1
    record = await api_gateways["TJ"].outbox.get(message_id)
    assert record is not None
    assert record.state == "receipted"
