// Review-queue keys (a Streamlit components-v2 module, public API only).
//
// Every press is sent with the pair the page showed when it went out, one press at a time: while the server
// applies a press and redraws, later presses wait in a queue (shown on the page) and go out against the pair
// shown next. So G then B 80 ms apart label the first pair good and the second bad, whatever the server's speed.
// The page passes {pair, ack, keys, enabled}: `ack` is the number of the last press the server applied.
//
// One keydown listener lives on the window for the whole browser session (re-adding it on every redraw would
// leave gaps in which a press is lost); each redraw only updates the state it reads.

const RESEND_MS = 8000; // a press the server has not answered by then is sent again (the server ignores repeats)

export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  const S = (window.__simxReviewKeys = window.__simxReviewKeys || {
    queue: [], inflight: null, seq: 0, pair: null, keys: {}, enabled: false, send: null, view: null, note: "",
  });
  S.keys = data.keys || {};
  S.enabled = !!data.enabled;
  S.pair = data.pair || null;
  S.seq = Math.max(S.seq, data.ack || 0);
  if (S.inflight && (data.ack || 0) >= S.inflight.seq) S.inflight = null;
  if (!S.pair) S.queue.length = 0; // the queue is finished: nothing to apply the waiting presses to

  parentElement.querySelectorAll(".simx-keys").forEach((old) => old.remove()); // an earlier draw's line
  const view = document.createElement("div");
  view.className = "simx-keys";
  view.setAttribute("data-testid", "simxReviewKeys");
  parentElement.appendChild(view);
  S.view = view;

  S.render = () => {
    if (!S.view) return;
    const waiting = S.queue.length + (S.inflight ? 1 : 0);
    S.view.textContent = S.note || (waiting ? `${waiting} key press${waiting > 1 ? "es" : ""} being applied, in order` : "");
    S.view.setAttribute("data-waiting", String(waiting));
  };

  S.send = (trigger) => {
    if (S.inflight) {
      if (Date.now() - S.inflight.at > RESEND_MS) {
        S.inflight.at = Date.now();
        trigger("press", { seq: S.inflight.seq, key: S.inflight.key, pair: S.inflight.pair });
      }
      return;
    }
    if (!S.queue.length || !S.pair) return;
    const key = S.queue.shift();
    S.inflight = { seq: ++S.seq, key, pair: S.pair, at: Date.now() };
    trigger("press", { seq: S.inflight.seq, key, pair: S.pair });
  };
  S.trigger = setTriggerValue;

  if (!S.listening) {
    S.listening = true;
    window.addEventListener("keydown", (e) => {
      if (!S.view || !S.view.isConnected) return; // the review page is not shown
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.composedPath ? e.composedPath()[0] : e.target;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName || ""))) return;
      const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
      if (!(key in S.keys)) return;
      e.preventDefault();
      e.stopPropagation();
      if (!S.enabled) {
        S.note = "Enter your name first: labels are saved under it.";
        S.render();
        return;
      }
      S.note = "";
      S.queue.push(key);
      S.send(S.trigger);
      S.render();
    }, true);
    window.setInterval(() => S.send && S.trigger && S.send(S.trigger), 1000);
  }
  S.send(setTriggerValue);
  S.render();
  return () => {
    if (S.view === view) S.view = null;
    view.remove();
  };
}
