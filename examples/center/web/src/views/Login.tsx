// The login page: user and password, sent once as HTTP Basic to `POST /api/session`.

import { useState } from "preact/hooks";
import { login } from "../api";
import { Logo } from "../components/Icons";

export function Login({ onLoggedIn, notice }: { onLoggedIn: () => void; notice?: string }) {
  const [user, setUser] = useState("admin");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await login(user, password);
      onLoggedIn();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };

  return (
    <main class="login-page">
      <form class="login-card" onSubmit={submit} data-testid="login-form">
        <div class="login-brand">
          <Logo />
          <h1>
            vinfra <strong>Center</strong>
          </h1>
        </div>
        <p class="muted">Sign in to manage the datacenter.</p>
        {notice && !error && <div class="info-note">{notice}</div>}
        <label class="field">
          <span class="field-label">User name</span>
          <input name="user" autocomplete="username" value={user} onInput={(e) => setUser((e.target as HTMLInputElement).value)} required />
        </label>
        <label class="field">
          <span class="field-label">Password</span>
          <input name="password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} required autofocus />
        </label>
        {error && (
          <div class="error-note" role="alert" data-testid="login-error">
            {error}
          </div>
        )}
        <button class="button primary wide" type="submit" disabled={busy} data-testid="login-submit">
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p class="login-foot muted">The first start of vinfra-center prints the admin password.</p>
      </form>
    </main>
  );
}
