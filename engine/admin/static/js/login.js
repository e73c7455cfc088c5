// The login form: POST /api/login, then the dashboard.
const form = document.getElementById("login");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const data = Object.fromEntries(new FormData(form).entries());
  const resp = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data), credentials: "same-origin",
  });
  if (resp.ok) {
    window.location.assign("/#/channels");
    return;
  }
  const body = await resp.json().catch(() => ({}));
  error.textContent = body.error || `login failed (${resp.status})`;
  error.hidden = false;
});
