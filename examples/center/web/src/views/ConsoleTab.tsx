// A VM's serial console in the browser: xterm.js over the center's WebSocket
// (`/api/vcenter/vm/{vm}/console`, proxied to the host that runs the VM; the session
// cookie authenticates it). Guest output arrives as text frames, keys go back as text.

import { Terminal } from "@xterm/xterm";
import { useEffect, useRef, useState } from "preact/hooks";
import { enc } from "../api";
import type { Vm } from "../types";

type State = "connecting" | "open" | "closed";

const RECONNECT_LIMIT = 5;

export function ConsoleTab({ vm }: { vm: Vm }) {
  const box = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<State>("connecting");
  const [why, setWhy] = useState<string | undefined>(undefined);
  const [attempt, setAttempt] = useState(0);
  const running = vm.power === "running" || vm.power === "paused";

  useEffect(() => {
    const el = box.current;
    if (!el || !running) return;
    const term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
      fontSize: 13,
      rows: 22,
      scrollback: 5000,
      theme: { background: "#0f1720", foreground: "#d7e0ea", cursor: "#7fb8ff" },
    });
    term.open(el);
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/vcenter/vm/${enc(vm.name)}/console`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    setState("connecting");
    setWhy(undefined);
    ws.onopen = () => {
      setState("open");
      term.focus();
    };
    ws.onmessage = (m: MessageEvent<string | ArrayBuffer>) => {
      term.write(typeof m.data === "string" ? m.data : decoder.decode(m.data, { stream: true }));
    };
    ws.onclose = (c) => {
      setState("closed");
      setWhy(c.reason || (c.code === 1000 ? "the console ended" : `connection closed (code ${c.code})`));
      term.write("\r\n\x1b[33m[console disconnected]\x1b[0m\r\n");
    };
    const input = term.onData((d) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(d);
    });
    return () => {
      input.dispose();
      ws.onclose = null;
      ws.close();
      term.dispose();
    };
    // A migration moves the console to another host: reconnect when the host changes.
  }, [vm.name, vm.host, running, attempt]);

  if (!running) {
    return (
      <div class="console-tab">
        <p class="empty">The VM is not running: power it on to see its console.</p>
      </div>
    );
  }
  return (
    <div class="console-tab" data-testid="console" data-state={state}>
      <div class="console-bar">
        <span class={`stream stream-${state === "open" ? "live" : state === "connecting" ? "connecting" : "offline"}`}>
          <span class="dot" />
          {state === "open" ? `Connected to ${vm.name}` : state === "connecting" ? "Connecting…" : `Disconnected: ${why ?? ""}`}
        </span>
        <span class="muted">Serial console · keys typed here go to the guest</span>
        {state === "closed" && attempt < RECONNECT_LIMIT && (
          <button class="button small" onClick={() => setAttempt(attempt + 1)}>
            Reconnect
          </button>
        )}
      </div>
      <div class="terminal" ref={box} />
    </div>
  );
}
