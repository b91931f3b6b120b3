// The console's entry: styles, then either the login page or the shell, decided by
// `GET /api/session` (a kept token or the session cookie may still be valid).

import "uplot/dist/uPlot.min.css";
import "@xterm/xterm/css/xterm.css";
import "./styles/app.css";

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { get, logout, setUnauthorizedHandler } from "./api";
import type { Me } from "./types";
import { Login } from "./views/Login";
import { Shell } from "./views/Shell";

type Phase = { kind: "checking" } | { kind: "login"; notice?: string } | { kind: "in"; me?: Me };

function readMe(v: unknown): Me | undefined {
  if (typeof v === "string") return { user: v };
  const o = (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
  const user = o.user ?? o.name ?? o.username;
  if (typeof user === "string") return { user, role: typeof o.role === "string" ? o.role : undefined };
  if (user && typeof user === "object") return readMe(user);
  return undefined;
}

function App() {
  const [phase, setPhase] = useState<Phase>({ kind: "checking" });

  const check = async () => {
    try {
      setPhase({ kind: "in", me: readMe(await get("/api/session")) });
    } catch {
      setPhase({ kind: "login" });
    }
  };

  useEffect(() => {
    setUnauthorizedHandler(() => setPhase({ kind: "login", notice: "Your session ended: sign in again." }));
    void check();
  }, []);

  if (phase.kind === "checking") return <div class="splash">vinfra Center</div>;
  if (phase.kind === "login") return <Login notice={phase.notice} onLoggedIn={check} />;
  return (
    <Shell
      me={phase.me}
      onLogout={async () => {
        await logout();
        setPhase({ kind: "login", notice: "You are logged out." });
      }}
    />
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
