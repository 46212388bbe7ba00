// The labeller's name, kept in this browser's local storage (a Streamlit components-v2 module, public API only),
// so that a reload, a new tab or a shared link opened in the same browser labels under the same name.
// The page passes {user, forget}: a name it knows is stored; `forget` (the name was cleared) removes it; when the
// page knows no name, the stored one is sent back once.
const KEY = "simx.user";

export default function (component) {
  const { data, setTriggerValue } = component;
  try {
    if (data.user) {
      if (window.localStorage.getItem(KEY) !== data.user) window.localStorage.setItem(KEY, data.user);
    } else if (data.forget) {
      window.localStorage.removeItem(KEY);
    } else {
      const stored = window.localStorage.getItem(KEY);
      if (stored) setTriggerValue("stored", stored);
    }
  } catch (e) {
    // storage is blocked in this browser: the name lives in this tab's session only
  }
}
