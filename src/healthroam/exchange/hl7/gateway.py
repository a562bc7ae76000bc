"""The MLLP listener: an asyncio server, one coroutine per connection, database work in the
group committer's threads.

Each connection is answered in order: a message's ACK is written before the next message on
that connection is looked at. Bad framing closes the connection; an oversized message is
answered with AR when its MSH can be read, then the connection is closed; a connection that
stays silent for the idle timeout is closed. Log lines name the peer, the sender and the
control id, never message content.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from healthroam.exchange.hl7.groupcommit import GroupCommitter, RawMessage
from healthroam.exchange.hl7.mllp import BadFraming, Frame, FrameDecoder, Oversized, frame
from healthroam.exchange.hl7.service import GatewayService, Outcome
from healthroam.records.search_params import search_index

log = logging.getLogger("healthroam.exchange.hl7")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 1_048_576
    idle_timeout_seconds: float = 300.0
    writer_threads: int = 4
    group_commit_max: int = 200
    ssl_context: ssl.SSLContext | None = None
    reuse_port: bool = False  # several processes share the port (SO_REUSEPORT)


def server_ssl_context(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ for the listener; with ``client_ca_file``, client certificates are required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca_file)
    return context


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class Gateway:
    def __init__(self, service: GatewayService, config: GatewayConfig) -> None:
        self.service, self.config = service, config
        self.committer = GroupCommitter(
            service, threads=config.writer_threads, batch_max=config.group_commit_max
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy = 0  # connections between receiving a message and sending its ACK
        self.port: int | None = None

    async def start(self) -> None:
        # The FHIR search parameters (index extraction on every write) are compiled before
        # the port opens: done lazily, the first message of the process waited ~2 s for them.
        await asyncio.to_thread(search_index)
        self.committer.start()
        self._server = await asyncio.start_server(
            self._connection,
            self.config.host,
            self.config.port,
            ssl=self.config.ssl_context,
            ssl_handshake_timeout=self.config.idle_timeout_seconds
            if self.config.ssl_context
            else None,
            reuse_port=self.config.reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "hl7 gateway listening on %s:%s (%s)",
            self.config.host,
            self.port,
            "MLLP over TLS" if self.config.ssl_context else "MLLP",
        )

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        with suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let messages being processed get their ACK, then close."""
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while self._busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.to_thread(self.committer.close)
        c = self.committer
        log.info(
            "hl7 gateway stopped: %d messages in %d groups, %d applied again with savepoints",
            c.messages,
            c.batches,
            c.retries,
        )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = _peer(writer)
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("hl7 connection %s dropped (%s)", peer, type(exc).__name__)
        except Exception as exc:  # never let one connection take the server down
            log.error("hl7 connection %s failed (%s)", peer, type(exc).__name__)
        finally:
            self._connections.discard(task)
            writer.close()
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        decoder = FrameDecoder(self.config.max_message_bytes)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65_536), self.config.idle_timeout_seconds)
            except TimeoutError:
                log.info("hl7 connection %s idle, closed", peer)
                return
            if not data:
                if decoder.pending:
                    log.info("hl7 connection %s closed in the middle of a message", peer)
                return
            for event in decoder.feed(data):
                if isinstance(event, Frame):
                    self._busy += 1
                    try:
                        outcome = await self._handle(event.payload, peer)
                        if outcome is None:
                            log.warning("hl7 connection %s closed without ACK (not stored)", peer)
                            return
                        writer.write(frame(outcome.ack))
                        await writer.drain()
                    finally:
                        self._busy -= 1
                elif isinstance(event, Oversized):
                    log.info(
                        "hl7 connection %s: message over %d bytes refused, closed",
                        peer,
                        event.limit,
                    )
                    nak = self.service.refuse_oversized(event.head, event.limit)
                    if nak is not None:
                        writer.write(frame(nak))
                        await writer.drain()
                    return
                elif isinstance(event, BadFraming):
                    log.info("hl7 connection %s: bad MLLP framing (%s), closed", peer, event.reason)
                    return

    async def _handle(self, payload: bytes, peer: str) -> Outcome | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome | None] = loop.create_future()

        def deliver(outcome: Outcome | None) -> None:
            def settle() -> None:
                if not done.done():
                    done.set_result(outcome)

            loop.call_soon_threadsafe(settle)

        self.committer.submit(RawMessage(payload, peer), deliver)
        return await done


@contextmanager
def running_gateway(service: GatewayService, config: GatewayConfig) -> Iterator[Gateway]:
    """A gateway serving in a background thread (its own event loop) until the block ends:
    for tests, benchmarks and embedding."""
    loop = asyncio.new_event_loop()
    gateway = Gateway(service, config)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(gateway.start())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="hl7-gateway", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield gateway
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def serve(service: GatewayService, config: GatewayConfig) -> None:
    """Run until SIGINT/SIGTERM, then stop accepting, finish in-flight messages and exit."""
    import signal

    gateway = Gateway(service, config)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server_task = asyncio.create_task(gateway.serve_forever())
    await stop.wait()
    server_task.cancel()
    await gateway.stop()
