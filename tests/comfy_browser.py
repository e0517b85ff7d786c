"""ComfyUI's own front end in headless Chromium, driven by Playwright: what a user sees.

tests/test_browser.py and scripts/screenshot_workflows.py use this. `BrowserSession`
starts the system Chromium (Playwright cannot download its own browsers here; Debian's
`chromium` package, which scripts/setup_env.sh installs, is used); `ComfyPage` is one tab
on a running ComfyUI (comfy_host.ComfyServer) with the actions a user takes there: the
templates browser, opening a workflow file, node search, the node library, hovering a
widget, the Run button. `ConsoleLog` records the page's console errors and tells the ones
this closed test environment always produces (each listed with its cause in
ENVIRONMENT_ERRORS) from the rest, which a test reports.

Written against front end 1.32.9 (the one ComfyUI 0.3.75 pins, which CI runs), 1.48.7 (ComfyUI
0.33.0's) and 1.58.1 (the newest, over 0.33.0; `make test-browser FRONTEND=...` runs another one):
roles, labels and the page's objects (window.app, window.LiteGraph) where the DOM would be brittle,
and a comment at each place where they differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

CHROMIUM_ENV = "LCM_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_COMMAND = (
    "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
    "chromium fonts-dejavu-core"
)
# Headless as root needs --no-sandbox; the rest stop Chromium from reaching for the network,
# which these machines do not have.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A toast and its close button: PrimeVue's in 1.32.9 and 1.48.7, Reka's (test ids) in 1.58.1.
TOAST = '.p-toast-message, [data-testid="toast"]'
TOAST_CLOSE = '.p-toast-close-button, [data-testid="toast-close"]'
VIEWPORT = {"width": 1600, "height": 1000}
# Pictures show the canvas alone: no minimap, canvas statistics or zoom menu. Stored before the
# page starts (switching the minimap off in a running page logs an error of the front end's own).
PICTURE_SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}
TIMEOUT_MS = 30_000


class BrowserUnavailable(RuntimeError):
    """No Chromium (or no Playwright) to run the front end in."""


def _expect(locator: Any) -> Any:
    """Playwright's expect (retrying assertions), imported when a page exists, so Playwright is there."""
    from playwright.sync_api import expect

    return expect(locator)


def chromium_path() -> str:
    """The Chromium to drive: $LCM_CHROMIUM, else Debian's /usr/bin/chromium; a clear error if absent."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BrowserUnavailable(
            f"chromium not found at {path}: run `scripts/setup_env.sh --chromium` as root (`make test` does; it "
            f"installs Debian's chromium), or install it yourself: {INSTALL_COMMAND} "
            f"(or set {CHROMIUM_ENV} to a Chromium binary)."
        )
    return path


# ---------------------------------------------------------------------------
# The console
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConsoleEntry:
    kind: str  # "error" (console.error, failed resources), "pageerror" (uncaught), "warning"
    text: str
    url: str  # the resource a "Failed to load resource" is about, else the script that logged it

    def __str__(self) -> str:
        return f"[{self.kind}] {self.text.splitlines()[0] if self.text else ''} ({self.url})"


@dataclasses.dataclass(frozen=True)
class KnownError:
    """A console error this test environment produces whatever the pack does, and why."""

    cause: str
    matches: Callable[[ConsoleEntry], bool]


def _missing(*paths: str) -> Callable[[ConsoleEntry], bool]:
    """A 404 for one of these server paths (query string included where given)."""
    def matches(entry: ConsoleEntry) -> bool:
        if not entry.text.startswith("Failed to load resource: the server responded with a status of 404"):
            return False
        path = re.sub(r"^https?://[^/]+", "", entry.url)
        return path in paths
    return matches


def _text(pattern: str, *, kind: str = "error") -> Callable[[ConsoleEntry], bool]:
    regex = re.compile(pattern, re.S)
    return lambda entry: entry.kind == kind and regex.fullmatch(entry.text) is not None


# Each entry was seen on the tests' server (front end 1.32.9, ComfyUI 0.3.75, a fresh user folder,
# no network; those marked 1.48.7 on ComfyUI 0.33.0, 1.58.1 over 0.3.75); the start-up ones (404s, the TypeError, the
# graph read before initialization) on a server with no custom node at all too.
# Anything else is reported.
ENVIRONMENT_ERRORS = (
    KnownError("the front end asks for the optional user stylesheets; a fresh user folder has none",
               _missing("/api/userdata/user.css", "/user.css")),
    KnownError("ComfyUI serves no favicon.ico", _missing("/favicon.ico")),
    KnownError("a fresh user folder has no saved workflows, subgraphs or workflow templates yet",
               _missing("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
                        "/api/userdata?dir=subgraphs%2F&recurse=true&split=false&full_info=true",
                        "/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true",  # 1.48.7
                        "/api/userdata/comfy.templates.json")),
    KnownError("ComfyUI's core templates come from the optional package comfyui-workflow-templates, "
               "which the test environment does not install",
               _missing("/templates/index.json", "/templates/index_logo.json")),  # index_logo: 1.58.1
    KnownError("the same missing core templates, as the front end reports them",
               # 1.58.1 adds the status and the stack ("AxiosError: Request failed with status code 404\n  at ...").
               _text(r"Error loading core workflow templates: AxiosError(: Request failed with status code 404\n.*)?")),
    KnownError("front end 1.32.9 writes its render-mode setting before that setting is defined, at start-up "
               "(GraphView's load, settings store onChange), with or without custom nodes",
               _text(r"TypeError: Cannot read properties of undefined \(reading 'id'\)\s+at onChange .*"
                     r"at load \(\S+/assets/GraphView-[\w-]+\.js:.*")),
    KnownError("front end 1.48.7 reads a setting before its graph exists, at start-up (settingStore), "
               "with or without custom nodes (seen on ComfyUI 0.33.0 with an empty custom_nodes folder)",
               _text(r"ComfyApp graph accessed before initialization")),
    KnownError("the test server runs with --disable-api-nodes, whose Content-Security-Policy (connect-src "
               "'self') blocks the front end's Comfy Registry look-up of the node packs a workflow names "
               "(cnr_id; ComfyUI 0.33.0 also allows data: there); there is no network here either",
               _text(r"Connecting to 'https://api\.comfy\.org/nodes\?[^']*' violates the following Content "
                     r"Security Policy directive: \"connect-src 'self'( data:)?\"\. The action has been blocked\.")),
)


def explain(entry: ConsoleEntry) -> str | None:
    """The cause of an environment error, or None for an error that a test must report."""
    for known in ENVIRONMENT_ERRORS:
        if known.matches(entry):
            return known.cause
    return None


class ConsoleLog:
    """Every console error and uncaught exception of a page, in order, and the warnings that name
    one of ``watched`` (the pack's node ids): `mark()` before an action, `unexplained(mark)` after."""

    def __init__(self, page: Any, watched: tuple[str, ...] = ()) -> None:
        self.entries: list[ConsoleEntry] = []
        self._watched = watched
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: Any) -> None:
        kind = message.type
        if kind == "warning" and not any(name in message.text for name in self._watched):
            return
        if kind in ("error", "warning"):
            self.entries.append(ConsoleEntry(kind, message.text, (message.location or {}).get("url") or ""))

    def _on_page_error(self, error: Any) -> None:
        text = f"{getattr(error, 'name', 'Error')}: {getattr(error, 'message', error)}"
        self.entries.append(ConsoleEntry("pageerror", f"{text}\n{getattr(error, 'stack', '') or ''}", ""))

    def mark(self) -> int:
        return len(self.entries)

    def unexplained(self, since: int = 0) -> list[ConsoleEntry]:
        return [entry for entry in self.entries[since:] if explain(entry) is None]


# ---------------------------------------------------------------------------
# The browser and the page
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mark:
    console: int
    toasts: int


class BrowserSession:
    """Playwright + one headless Chromium; a context manager that closes both."""

    def __init__(self) -> None:
        self._playwright: Any = None
        self.browser: Any = None

    def __enter__(self) -> BrowserSession:
        executable = chromium_path()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as err:
            raise BrowserUnavailable(f"the Python package playwright is missing ({err}): run `make test`, "
                                     "whose venv has it (requirements-dev.txt)") from None
        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        except BaseException:
            self._playwright.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        browser, self.browser = self.browser, None
        try:
            if browser is not None:
                browser.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()
                self._playwright = None

    def open(self, url: str, watched: tuple[str, ...] = (), settings: dict[str, Any] | None = None) -> ComfyPage:
        """A new tab on the front end at ``url``, with ``settings`` stored (for this user) before it starts."""
        page = self.browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        comfy = ComfyPage(page, url, ConsoleLog(page, watched))
        for key, value in (settings or {}).items():
            answer = page.request.post(f"{url}/api/settings/{key}", data=json.dumps(value),
                                       headers={"Content-Type": "application/json"})
            if not answer.ok:
                raise RuntimeError(f"POST /api/settings/{key}: {answer.status} {answer.text()}")
        comfy.open()
        return comfy


# JavaScript run in the page. `app` is ComfyUI's ComfyApp, app.graph the LiteGraph graph shown.
#
# _INSTRUMENT counts the workflow loads that finished (every way of opening a workflow ends in
# app.loadGraphData, which also opens the missing-nodes dialog) and keeps the text of every toast
# shown (workflow validation reports its findings in toasts; the page may close them later).
_INSTRUMENT = """toastSelector => {
  window.__lcm = {loads: 0, toasts: []};
  const load = app.loadGraphData;
  app.loadGraphData = async function (...args) {
    try { return await load.apply(this, args); } finally { window.__lcm.loads++; }
  };
  const seen = new WeakSet();
  new MutationObserver(() => {
    for (const toast of document.querySelectorAll(toastSelector)) {
      if (!seen.has(toast)) { seen.add(toast); window.__lcm.toasts.push(toast.innerText.trim()); }
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""
# Node ids as text throughout (1.48.7 may hold them as strings, 1.32.9 as numbers).
_GRAPH_STATE = """() => ({
  nodes: app.graph.nodes.map(n => ({
    id: String(n.id), type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
    bounding: [...n.boundingRect], registered: n.type in LiteGraph.registered_node_types,
    widgets: (n.widgets || []).filter(w => w.serialize !== false).map(w => ({
      name: w.name, value: w.value, advanced: w.options?.advanced === true,
      visible: n.isWidgetVisible ? n.isWidgetVisible(w) : true,
      drawn_at: w.last_y ?? null, height: w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT,
    })),
  })),
  links: app.graph.serialize().links.map(([, from, fromSlot, to, toSlot, type]) =>
    [String(from), fromSlot, String(to), toSlot, type]),
  groups: app.graph.groups.map(g => ({title: g.title, bounding: [...g._bounding],
                                      title_height: g.titleHeight ?? LiteGraph.NODE_TITLE_HEIGHT})),
})"""

_SCREEN_POINT = """([nodeId, what, name]) => {
  const node = app.graph.getNodeById(nodeId);
  app.canvas.centerOnNode(node);
  let point;
  if (what === 'widget') {
    const widget = node.widgets.find(w => w.name === name);
    app.canvas.draw(true, true);  // lays the widgets out (last_y)
    point = [node.pos[0] + node.size[0] / 2, node.pos[1] + widget.last_y + LiteGraph.NODE_WIDGET_HEIGHT / 2];
  } else {
    point = node.getConnectionPos(true, node.findInputSlot(name));
    point = [point[0] + 6, point[1]];
  }
  const [x, y] = app.canvas.ds.convertOffsetToCanvas(point);
  const rect = app.canvas.canvas.getBoundingClientRect();
  return [x + rect.left, y + rect.top];
}"""

# The node search's entries as {name, category}: 1.32.9 puts the name in aria-label and the path in
# .option-category ("sampling > custom_sampling > lcm"); 1.48.7 shows the name as the first line of
# the entry and the path ("sampling / custom_sampling / lcm") on a later one, after the pack's badge.
_SEARCH_OPTIONS = """() => [...document.querySelectorAll('[role="option"]')].map(option => {
  const lines = option.innerText.split('\\n').map(line => line.trim()).filter(Boolean);
  return {
    name: option.getAttribute('aria-label') ?? lines[0],
    category: option.querySelector('.option-category')?.innerText.trim()
      ?? lines.slice(1).find(line => line.includes(' / ')) ?? null,
  };
})"""

# The names of a node-library folder's children. 1.32.9 (PrimeVue Tree) nests them in the folder's
# [role=group] with the name in aria-label; 1.48.7 (a flat, virtualised tree) lists them after the
# folder, one aria-level deeper, the name as the row's text (beside a Bookmark button).
_TREE_CHILDREN = """folder => {
  const nested = folder.querySelector('[role="group"]');
  if (nested) {
    return [...nested.querySelectorAll(':scope > [role="treeitem"]')].map(item => item.getAttribute('aria-label'));
  }
  const level = Number(folder.getAttribute('aria-level'));
  const names = [];
  for (let item = folder.nextElementSibling; item; item = item.nextElementSibling) {
    const itemLevel = Number(item.getAttribute('aria-level'));
    if (!(itemLevel > level)) break;
    if (itemLevel === level + 1) names.push(item.innerText.trim().split('\\n')[0].trim());
  }
  return names;
}"""

_GRAPH_BOUNDS = """() => {
  const r = [Infinity, Infinity, -Infinity, -Infinity];
  const add = ([x, y, w, h]) => {
    r[0] = Math.min(r[0], x); r[1] = Math.min(r[1], y); r[2] = Math.max(r[2], x + w); r[3] = Math.max(r[3], y + h);
  };
  app.graph.nodes.forEach(n => add(n.boundingRect));
  app.graph.groups.forEach(g => add(g._bounding));
  return r;
}"""


class ComfyPage:
    """One browser tab on ComfyUI's front end."""

    def __init__(self, page: Any, url: str, console: ConsoleLog) -> None:
        self.page = page
        self.url = url
        self.console = console

    # -- start-up -----------------------------------------------------------
    def open(self) -> None:
        answer = self.page.request.get(f"{self.url}/api/settings/Comfy.TutorialCompleted")
        first_start = not (answer.ok and answer.json())
        self.page.goto(self.url)
        self.page.wait_for_function("() => window.app?.graph && window.LiteGraph && app.canvas?.ds")
        self.page.evaluate(_INSTRUMENT, TOAST)
        if first_start:
            # On a user's first start every front end opens the templates browser by itself, some
            # time after the graph exists (1.48.7 later than 1.32.9): wait for it and close it, so
            # that it never covers what a test clicks next.
            self.templates_dialog().wait_for(state="visible")
            self.close_templates_dialog()

    def mark(self) -> Mark:
        """Where the page's record of problems stands now (see problems_since)."""
        return Mark(self.console.mark(), self.page.evaluate("() => window.__lcm.toasts.length"))

    def problems_since(self, mark: Mark) -> list[str]:
        """Console errors not explained by the environment, and toasts shown, since ``mark``."""
        toasts = self.page.evaluate("() => window.__lcm.toasts")[mark.toasts:]
        return [str(entry) for entry in self.console.unexplained(mark.console)] + [f"[toast] {t}" for t in toasts]

    @property
    def frontend_version(self) -> str:
        return str(self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__"))

    def registered_node_types(self) -> dict[str, dict[str, Any]]:
        """The node definitions the front end registered (LiteGraph.registered_node_types[*].nodeData).

        display_name named on its own: 1.58.1's definitions compute it (a getter, which the copy out
        of the page leaves out); 1.32.9's and 1.48.7's hold it."""
        return self.page.evaluate("""() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)
            .filter(([, t]) => t.nodeData)
            .map(([name, t]) => [name, {...t.nodeData, display_name: t.nodeData.display_name}]))""")

    def templates_dialog(self) -> Any:
        """The templates browser, by its dialog key: 1.32.9 (a PrimeVue dialog) and 1.48.7 label it with
        the key (aria-labelledby); 1.58.1 (a Reka dialog, labelled by a generated title id) carries the
        key as data-dialog-key."""
        key = "global-workflow-template-selector"
        return self.page.locator(f'[aria-labelledby="{key}"], [role="dialog"][data-dialog-key="{key}"]')

    def close_templates_dialog(self) -> None:
        """The templates browser opens by itself on a first start; close it if it is open."""
        dialog = self.templates_dialog()
        if dialog.count():
            dialog.locator('button:has(i.pi-times), button[aria-label="Close dialog"]').first.click()
            dialog.wait_for(state="detached")

    def close_dialogs(self) -> None:
        """Close the templates browser, any other open dialog and any toast (their close buttons)."""
        from playwright.sync_api import Error as PlaywrightError

        self.close_templates_dialog()
        closable = self.page.locator(".p-dialog").filter(has=self.page.locator("button[aria-label='Close']"))
        toasts = self.page.locator(TOAST)
        error_overlays = self.page.get_by_test_id("error-overlay")  # 1.48.7
        # Toasts first: they lie over 1.48.7's error overlay. One at a time, found again after each:
        # closing one moves the others (a stack of toasts).
        for close_buttons in (toasts.locator(TOAST_CLOSE), closable.locator("button[aria-label='Close']"),
                              error_overlays.get_by_role("button", name="Close")):
            for _ in range(20):
                visible = close_buttons.locator("visible=true")
                if not visible.count():
                    break
                button = visible.first.element_handle()
                try:
                    button.click(force=True)  # also while it still moves in (an opening animation)
                    button.wait_for_element_state("hidden", timeout=3000)
                except PlaywrightError:
                    pass  # a click during the opening animation can miss, or the button went: look again
        _expect(closable).to_have_count(0)  # closing animations included
        _expect(toasts).to_have_count(0)
        _expect(error_overlays.locator("visible=true")).to_have_count(0)

    def dialog_texts(self) -> list[str]:
        """The text of every open dialog (PrimeVue's .p-dialog), e.g. the missing-nodes one."""
        return [text.strip() for text in self.page.locator(".p-dialog").all_inner_texts()]

    def missing_nodes_dialog(self) -> str | None:
        """What the front end shows about missing nodes, else None: 1.32.9's "This workflow has
        missing nodes" dialog, or 1.48.7's missing-node group in the details of its error overlay
        ("N errors found", View details: the properties panel's Errors tab)."""
        dialog = self.page.locator('.p-dialog[aria-labelledby="global-missing-nodes"]')
        if dialog.count():
            return dialog.inner_text()
        for text in self.dialog_texts():
            if "missing nodes" in text.lower():
                return text
        overlay = self.page.get_by_test_id("error-overlay")
        if not (overlay.count() and overlay.is_visible()):
            return None
        overlay.get_by_role("button", name="View details").click()
        try:
            group = self.page.get_by_test_id("error-group-missing-node")
            return group.inner_text() if group.count() else None
        finally:
            self.page.get_by_role("button", name="Toggle properties panel").click()

    # -- loading workflows ------------------------------------------------
    def wait_for_graph(self, workflow: dict[str, Any]) -> None:
        """Until the canvas holds exactly the nodes (ids and types) of ``workflow``."""
        expected = sorted([str(node["id"]), node["type"]] for node in workflow["nodes"])
        # Ids as text: newer front ends (1.48) may hold them as strings.
        self.page.wait_for_function(
            """expected => JSON.stringify(app.graph.nodes.map(n => [String(n.id), n.type])
                 .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) === JSON.stringify(expected)""",
            arg=expected)

    def _loads(self) -> int:
        return int(self.page.evaluate("() => window.__lcm.loads"))

    def _wait_for_load(self, before: int, workflow: dict[str, Any]) -> None:
        """Until the load that started after ``before`` loads had finished is over (its dialogs
        and toasts shown), with the canvas holding ``workflow``."""
        self.page.wait_for_function("before => window.__lcm.loads > before", arg=before)
        self.wait_for_graph(workflow)

    def load_template(self, section: str, name: str, workflow: dict[str, Any]) -> None:
        """Templates (side bar) -> the extension's section -> the card titled ``name``."""
        self.close_templates_dialog()
        before = self._loads()
        self.page.get_by_role("button", name="Templates", exact=True).click()
        dialog = self.templates_dialog()
        dialog.get_by_text(section, exact=True).click()
        dialog.get_by_text(name, exact=True).click()
        dialog.wait_for(state="detached")
        self._wait_for_load(before, workflow)

    def open_file(self, path: Path) -> dict[str, Any]:
        """Workflow -> Open: the front end's file input, given a workflow .json."""
        workflow = json.loads(path.read_text(encoding="utf-8"))
        before = self._loads()
        self.page.locator("#comfy-file-input").set_input_files(str(path))
        self._wait_for_load(before, workflow)
        return workflow

    def load_graph(self, workflow: dict[str, Any]) -> None:
        """What the front end does with a workflow it was handed (app.loadGraphData)."""
        before = self._loads()
        self.page.evaluate("workflow => app.loadGraphData(workflow)", workflow)
        self._wait_for_load(before, workflow)

    def graph(self) -> dict[str, Any]:
        """Nodes (with their widgets as the front end holds them), links and groups on the canvas; node
        ids as text, links as [from id, from slot, to id, to slot, type]."""
        return self.page.evaluate(_GRAPH_STATE)

    def clear_graph(self) -> None:
        self.page.evaluate("() => { app.graph.clear(); app.canvas.setDirty(true, true); }")

    def wait_for_canvas_at(self, x: float, y: float) -> None:
        """Until the canvas is what a pointer at (x, y) reaches (a closing dialog's mask no longer covers it)."""
        self.page.wait_for_function("([x, y]) => document.elementFromPoint(x, y)?.id === 'graph-canvas'", arg=[x, y])

    # -- finding nodes ----------------------------------------------------
    def search_and_add(self, display_name: str) -> tuple[str, str]:
        """Double-click the empty canvas, type ``display_name``, pick the entry of that name.

        Returns (the category the search list shows for it, the type of the node it added)."""
        self.clear_graph()
        box = self.page.locator("#graph-canvas").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.wait_for_canvas_at(x, y)
        # 1.32.9: an input in .comfy-vue-node-search-container; 1.48.7: the "Add a node..." combobox.
        search = self.page.locator(".comfy-vue-node-search-container input").or_(
            self.page.get_by_role("combobox", name="Add a node..."))
        # A pause in each click: LiteGraph (CanvasPointer) takes two presses for a double click only
        # when their event times differ (0 < dt < 300 ms), and back-to-back synthetic presses can
        # carry the same time stamp.
        self.page.mouse.dblclick(x, y, delay=30)
        # Into the box once it has the focus: keys that reach the canvas are shortcuts (m: models, ...).
        _expect(search).to_be_focused()
        search.press_sequentially(display_name)
        # The entry of exactly that name, once the list shows it (the list follows the typing).
        found = self.page.wait_for_function(
            f"name => {{ const options = ({_SEARCH_OPTIONS})(); "
            "const i = options.findIndex(o => o.name === name); return i < 0 ? false : [i, options[i].category]; }",
            arg=display_name).json_value()
        index, category = found
        self.page.get_by_role("option").nth(index).click()
        self.page.wait_for_function("() => app.graph.nodes.length === 1")
        added = self.page.evaluate("() => app.graph.nodes[0].type")
        self.clear_graph()
        # 1.48.7 stays in a state after adding from its search in which the canvas shows no tooltip
        # and takes the next double click as nothing; Escape, as a user would press, ends it.
        self.page.keyboard.press("Escape")
        return category, added

    def node_library(self, path: tuple[str, ...]) -> list[str]:
        """Node Library (side bar): open the folders of ``path``; the names listed in the last one."""
        button = self.page.get_by_role("button", name=re.compile(r"^Node Library"))
        button.click()
        try:
            for name in path:
                folder = self.page.get_by_role("treeitem", name=name, exact=True).first
                if folder.get_attribute("aria-expanded") != "true":
                    # 1.32.9 nests the children inside the item: click its own row, not a child.
                    row = folder.locator(".p-tree-node-content").first
                    (row if row.count() else folder).click()
                self.page.wait_for_function("item => item.getAttribute('aria-expanded') === 'true'",
                                            arg=folder.element_handle())
            return folder.evaluate(_TREE_CHILDREN)
        finally:
            button.click()

    # -- tooltips ---------------------------------------------------------
    def hover_tooltip(self, node_id: int, what: str, name: str) -> str:
        """Hover a node's widget (``what`` "widget") or input slot ("slot"); the tooltip text shown."""
        self.page.mouse.move(1, 1)
        # Hidden, not gone: 1.48.7 keeps the (empty) tooltip element in the page.
        self.page.locator(".node-tooltip").wait_for(state="hidden")
        x, y = self.page.evaluate(_SCREEN_POINT, [node_id, what, name])
        self.wait_for_canvas_at(x, y)
        self.page.mouse.move(x - 3, y)
        self.page.mouse.move(x, y)
        tooltip = self.page.locator(".node-tooltip")
        tooltip.wait_for(state="visible")
        text = tooltip.inner_text().strip()
        self.page.mouse.move(1, 1)
        return text

    # -- running ----------------------------------------------------------
    def set_widget(self, node_id: int, name: str, value: Any) -> None:
        """Set a widget as editing it does (value, then its callback)."""
        self.page.evaluate("""([id, name, value]) => {
            const widget = app.graph.getNodeById(id).widgets.find(w => w.name === name);
            widget.value = value;
            widget.callback?.(value, app.canvas, app.graph.getNodeById(id));
            app.canvas.setDirty(true, true);
        }""", [node_id, name, value])

    def run(self) -> None:
        """The Run (queue) button of the action bar. 1.48.7 names its run-mode menu "Run" too; its
        queue button is the one with data-testid queue-button."""
        queue = self.page.get_by_test_id("queue-button")
        (queue if queue.count() else self.page.get_by_role("button", name="Run", exact=True)).click()

    def wait_for_image_previews(self, node_ids: list[int], timeout_ms: int = 180_000) -> list[dict[str, Any]]:
        """Until each node shows a loaded image preview (node.imgs); their src and pixel sizes."""
        self.page.wait_for_function(
            """ids => ids.every(id => { const imgs = app.graph.getNodeById(id).imgs;
                 return imgs?.length && imgs[0].complete && imgs[0].naturalWidth > 0; })""",
            arg=node_ids, timeout=timeout_ms)
        return self.page.evaluate("""ids => ids.map(id => { const img = app.graph.getNodeById(id).imgs[0];
            return {src: img.src, width: img.naturalWidth, height: img.naturalHeight,
                    outputs: app.nodeOutputs?.[String(id)]?.images ?? null}; })""", node_ids)

    # -- pictures -----------------------------------------------------------
    def prepare_for_pictures(self) -> None:
        """Only the canvas: no side bars, menus or banners (focus mode; see also PICTURE_SETTINGS)."""
        self.close_dialogs()
        self.page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        # Focus mode leaves its own toggle button in a corner: no button at all (the canvas and the
        # text widgets on it are no buttons), no legacy menu, no toast (1.58.1: its toast viewport).
        self.page.add_style_tag(content="#vue-app button { visibility: hidden !important; }"
                                        ".comfy-menu, .p-toast, [data-testid='toast-viewport'] "
                                        "{ display: none !important; }")
        self.page.mouse.move(0, 0)

    def frame_graph(self, margin: int = 40, scale: float = 1.0) -> tuple[int, int]:
        """Size the viewport to the whole graph (nodes, groups, notes) at ``scale`` and fit it there."""
        left, top, right, bottom = self.page.evaluate(_GRAPH_BOUNDS)
        width = int((right - left) * scale + 2 * margin)
        height = int((bottom - top) * scale + 2 * margin)
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.evaluate("""([scale, x, y]) => {
            app.canvas.resize(); app.canvas.ds.scale = scale; app.canvas.ds.offset = [x, y];
            app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        }""", [scale, margin / scale - left, margin / scale - top])
        # Two frames: the canvas and the DOM widgets (prompts, notes) follow the new view.
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return width, height

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))
