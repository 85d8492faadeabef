"""A recording SMTP sink for the install test, run inside the container (stdlib only): every
message it accepts becomes one JSON line in OUT; recipients whose local part is `reject`
get 550."""

import asyncio
import json
import sys

OUT = sys.argv[2]


def _append(line: str) -> None:
    with open(OUT, "a") as out:  # small, and the sink has nothing else to do meanwhile
        out.write(line)


def _address(command: str) -> str:
    """`MAIL FROM:<a@b> SIZE=1` -> a@b."""
    words = command.partition(":")[2].split()
    return words[0].strip("<>") if words else ""


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    def say(line: str) -> None:
        writer.write(line.encode() + b"\r\n")

    say("220 sink ESMTP")
    sender, recipients = "", list[str]()
    while line := await reader.readline():
        command = line.decode("utf-8", "replace").strip()
        verb = command[:4].upper()
        if verb in ("EHLO", "HELO"):
            say("250 sink")
        elif verb == "MAIL":
            sender, recipients = _address(command), []
            say("250 ok")
        elif verb == "RCPT":
            recipient = _address(command)
            if recipient.split("@")[0] == "reject":
                say("550 5.1.1 no such user")
            else:
                recipients.append(recipient)
                say("250 ok")
        elif verb == "DATA":
            say("354 go")
            lines = []
            while (data := await reader.readline()) not in (b".\r\n", b""):
                lines.append(data.decode("utf-8", "replace"))
            record = {"from": sender, "to": recipients, "data": "".join(lines)}
            _append(json.dumps(record) + "\n")
            say("250 queued")
        elif verb == "QUIT":
            say("221 bye")
            break
        else:
            say("250 ok")
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(session, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
