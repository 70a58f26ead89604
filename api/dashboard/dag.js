// The operation DAG of one agenda: every operation, started or not, with edges from
// `dependsOn` and references (the server's `Operation.dependsOn`) and dashed edges from a
// generator to the operations it generated, so those sit under it.
//
// Layout: dagre up to LARGE operations, drawn as SVG; above that (Argo's threshold for a
// frozen page) a layered layout in linear time — rank = longest path from a root, nodes of one
// rank in a column — drawn on a canvas the size of the visible area (`CanvasDag`). The layout
// depends only on the graph's shape, so it is computed once per shape and live progress only
// recolours nodes and moves their bars. In software rendering (no GPU) an SVG of hundreds of
// nodes costs style, layout and paint of the whole drawing per changed node; the canvas
// redraws only the boxes a report changed, and only those in view.

import { html, useMemo, useState, useEffect, useRef, Component } from './vendor/htm-preact-3.1.1.mjs';
import dagre from './vendor/dagre-3.1.3.mjs';

export const LARGE = 200;
const W = 168;
const H = 44;

/// The graph: nodes (name, type, generator) and edges (from, to, generated).
export function graphOf(operations, progress) {
  const nodes = new Map();
  for (const op of operations || []) {
    nodes.set(op.name, { name: op.name, type: op.type, generatedBy: op.generatedBy || null, deps: op.dependsOn || [] });
  }
  // An operation the progress knows and the agenda body does not (should not happen): still drawn.
  for (const p of progress || []) {
    if (!nodes.has(p.operation)) nodes.set(p.operation, { name: p.operation, type: '', generatedBy: null, deps: [] });
  }
  const edges = [];
  for (const n of nodes.values()) {
    for (const d of n.deps) if (nodes.has(d)) edges.push({ from: d, to: n.name, generated: false });
    if (n.generatedBy && nodes.has(n.generatedBy) && !n.deps.includes(n.generatedBy)) {
      edges.push({ from: n.generatedBy, to: n.name, generated: true });
    }
  }
  return { nodes: [...nodes.values()], edges };
}

function shapeKey(g) {
  return g.nodes.map((n) => n.name).join('\u0000') + '\u0001' + g.edges.map((e) => e.from + '>' + e.to).join('\u0000');
}

/// Positions: { pos: Map(name → {x, y}), width, height, large }.
export function layout(g) {
  if (g.nodes.length > LARGE) return layered(g);
  const d = new dagre.graphlib.Graph();
  d.setGraph({ rankdir: 'TB', nodesep: 24, ranksep: 40, marginx: 8, marginy: 8 });
  d.setDefaultEdgeLabel(() => ({}));
  for (const n of g.nodes) d.setNode(n.name, { width: W, height: H });
  for (const e of g.edges) d.setEdge(e.from, e.to);
  dagre.layout(d);
  const pos = new Map();
  for (const n of g.nodes) {
    const p = d.node(n.name);
    pos.set(n.name, { x: p.x - W / 2, y: p.y - H / 2 });
  }
  const gg = d.graph();
  return { pos, width: Math.max(gg.width || 0, W + 16), height: Math.max(gg.height || 0, H + 16), large: false };
}

/// Longest-path layering (Kahn's order), ranks left to right, a rank's nodes top to bottom.
export function layered(g) {
  const indeg = new Map(g.nodes.map((n) => [n.name, 0]));
  const out = new Map(g.nodes.map((n) => [n.name, []]));
  for (const e of g.edges) {
    indeg.set(e.to, indeg.get(e.to) + 1);
    out.get(e.from).push(e.to);
  }
  const rank = new Map();
  const queue = g.nodes.filter((n) => indeg.get(n.name) === 0).map((n) => n.name);
  for (const q of queue) rank.set(q, 0);
  for (let i = 0; i < queue.length; i++) {
    const v = queue[i];
    for (const w of out.get(v)) {
      rank.set(w, Math.max(rank.get(w) || 0, rank.get(v) + 1));
      indeg.set(w, indeg.get(w) - 1);
      if (indeg.get(w) === 0) queue.push(w);
    }
  }
  // A cycle cannot be submitted; should one appear, its nodes go in a last column.
  let maxRank = 0;
  for (const r of rank.values()) maxRank = Math.max(maxRank, r);
  for (const n of g.nodes) if (!rank.has(n.name)) rank.set(n.name, maxRank + 1);
  const rows = new Map();
  const pos = new Map();
  let width = 0;
  let height = 0;
  for (const n of g.nodes) {
    const r = rank.get(n.name);
    const row = rows.get(r) || 0;
    rows.set(r, row + 1);
    const p = { x: 8 + r * (W + 48), y: 8 + row * (H + 12) };
    pos.set(n.name, p);
    width = Math.max(width, p.x + W + 8);
    height = Math.max(height, p.y + H + 8);
  }
  return { pos, width, height, large: true };
}

/// The smallest and largest zoom of a drawing, and a step of the − and + buttons.
export const ZOOM_MIN = 0.1;
/// From how many operations the drawing has its tools (find, next running or failed, zoom).
const TOOLS_FROM = 20;
const ZOOM_STEP = 1.25;
const clampZoom = (z) => Math.max(ZOOM_MIN, Math.min(1, z));

/// The operation a search names: the one of that name (any case), else the only one whose name
/// starts with it, else the only one containing it; `null` when none or several do.
export function findOperation(names, text) {
  const t = (text || '').trim().toLowerCase();
  if (!t) return null;
  const exact = names.find((n) => n.toLowerCase() === t);
  if (exact) return exact;
  for (const test of [(n) => n.toLowerCase().startsWith(t), (n) => n.toLowerCase().includes(t)]) {
    const hits = names.filter(test);
    if (hits.length === 1) return hits[0];
    if (hits.length > 1) return { several: hits.length };
  }
  return null;
}

/// The next operation in `state` after `selected` in the agenda's order, round to the first.
export function nextIn(nodes, states, state, selected) {
  const of = nodes.filter((n) => (states.get(n.name) || UNSTARTED).state === state).map((n) => n.name);
  if (!of.length) return null;
  const order = new Map(nodes.map((n, i) => [n.name, i]));
  const at = selected && order.has(selected) ? order.get(selected) : -1;
  return of.find((name) => order.get(name) > at) || of[0];
}

/// Over the drawing: find an operation by name, jump to the next running or failed one (a
/// large agenda is many screens wide: dash54 M2), and zoom out to see all of it at once.
/// Where a selected operation's detail is: scrolled to, and focused.
function showDetail() {
  const detail = document.getElementById('op-detail');
  if (!detail) return;
  detail.scrollIntoView({ block: 'start' });
  detail.focus({ preventScroll: true });
}

function DagTools({ g, states, selected, onSelect, zoom, setZoom, fit }) {
  const [text, setText] = useState('');
  const [said, setSaid] = useState('');
  const names = useMemo(() => g.nodes.map((n) => n.name), [g]);
  // The same vnode while the names stay: not diffed again at every live update.
  const list = useMemo(() => names.length <= 5000 && html`<datalist id="dag-names">${names.map((n) => html`<option value=${n}/>`)}</datalist>`, [names]);
  const count = (state) => {
    let k = 0;
    for (const n of g.nodes) if ((states.get(n.name) || UNSTARTED).state === state) k++;
    return k;
  };
  const find = (e) => {
    e.preventDefault();
    const hit = findOperation(names, text);
    if (typeof hit === 'string') {
      setSaid('');
      onSelect && onSelect(hit);
    } else setSaid(hit ? `${hit.several} operations match "${text.trim()}"; type more of the name` : `no operation matches "${text.trim()}"`);
  };
  const jump = (state) => {
    setSaid('');
    const name = nextIn(g.nodes, states, state, selected);
    if (name && onSelect) onSelect(name);
  };
  const running = count('executing');
  const failed = count('failed');
  // What is selected, in words: a box on a canvas says nothing to a screen reader (dash55 L2).
  const chosen = selected && (states.get(selected) || UNSTARTED);
  return html`<div class="dag-tools" role="toolbar" aria-label="operation DAG tools">
    <form class="dag-find" onSubmit=${find}>
      <input id="dag-find" type="search" list="dag-names" placeholder="Find an operation" aria-label="find an operation by name" value=${text} onInput=${(e) => { setText(e.target.value); setSaid(''); }}/>
      ${list}
      <button type="submit" id="dag-find-go">Find</button>
    </form>
    <button id="dag-next-executing" disabled=${!running} onClick=${() => jump('executing')}>Next running (${running})</button>
    <button id="dag-next-failed" disabled=${!failed} onClick=${() => jump('failed')}>Next failed (${failed})</button>
    <span class="dag-zoom">
      <button id="dag-zoom-out" aria-label="zoom out" disabled=${zoom <= ZOOM_MIN} onClick=${() => setZoom(clampZoom(zoom / ZOOM_STEP))}>−</button>
      <span id="dag-zoom" class="muted">${Math.round(zoom * 100)}%</span>
      <button id="dag-zoom-in" aria-label="zoom in" disabled=${zoom >= 1} onClick=${() => setZoom(clampZoom(zoom * ZOOM_STEP))}>+</button>
      <button id="dag-fit" onClick=${() => {
        const f = fit();
        setZoom(f.zoom);
        setSaid(f.fits ? '' : `too large to fit at the smallest zoom (${Math.round(ZOOM_MIN * 100)}%): its width fits, scroll down`);
      }}>Fit</button>
      <button id="dag-zoom-reset" disabled=${zoom === 1} onClick=${() => setZoom(1)}>100%</button>
    </span>
    ${said && html`<span class="dag-said" role="status">${said}</span>`}
    ${chosen && html`<span class="dag-selected" id="dag-selected" role="status">Selected <b>${selected}</b>: ${chosen.state}${chosen.percent != null ? ' · ' + Math.round(chosen.percent) + '%' : ''}${chosen.message ? ' — ' + (chosen.message.length > 120 ? chosen.message.slice(0, 119) + '…' : chosen.message) : ''} <button class="link" id="dag-show-detail" onClick=${showDetail}>details ↓</button></span>`}
  </div>`;
}

/// Scrolls `box` (drawing units, scaled by `zoom`) into the middle of `el` unless it is in
/// view already: the drawing's own scrolling, never the page's.
function reveal(el, box, zoom) {
  if (!el || !box) return;
  const x = box.x * zoom, y = box.y * zoom, w = W * zoom, h = H * zoom;
  if (x < el.scrollLeft || x + w > el.scrollLeft + el.clientWidth) el.scrollLeft = Math.max(0, x + w / 2 - el.clientWidth / 2);
  if (y < el.scrollTop || y + h > el.scrollTop + el.clientHeight) el.scrollTop = Math.max(0, y + h / 2 - el.clientHeight / 2);
}

/// The point of the drawing (its own units) in the middle of `el`'s view at `zoom`.
function middleOf(el, zoom) {
  return { x: (el.scrollLeft + el.clientWidth / 2) / zoom, y: (el.scrollTop + el.clientHeight / 2) / zoom };
}

/// Scrolls `el` so that `point` (drawing units) is in the middle of its view at `zoom`.
function centre(el, point, zoom) {
  if (!el || !point) return;
  el.scrollLeft = Math.max(0, point.x * zoom - el.clientWidth / 2);
  el.scrollTop = Math.max(0, point.y * zoom - el.clientHeight / 2);
}

/// The DAG view. `states`: Map(name → {state, percent, message}); `onSelect(name)`.
export function Dag({ operations, progress, states, selected, onSelect }) {
  const g = useMemo(() => graphOf(operations, progress), [operations, progress && progress.length]);
  const key = useMemo(() => shapeKey(g), [g]);
  const lay = useMemo(() => layout(g), [key]);
  const [zoom, setZoom] = useState(1);
  const wrap = useRef(null);
  // The zoom at which the whole drawing fits the width of the page and the height a drawing
  // may take (70 % of the window).
  const fit = () => {
    const el = wrap.current;
    const width = (el && el.clientWidth) || window.innerWidth;
    const across = (width - 4) / lay.width;
    const down = (window.innerHeight * 0.7 - 20) / lay.height;
    // Too tall to fit at the smallest zoom: fit its width and scroll down (reprobe55 L2: a
    // 300-operation tree became an unreadable sliver still taller than the view); said so
    // (dash55 M2).
    if (down < ZOOM_MIN) return { zoom: clampZoom(Math.min(1, across)), fits: false };
    return { zoom: clampZoom(Math.min(1, across, down)), fits: true };
  };
  // A handful of boxes needs no tools (every one is in view).
  // With tools, a choice in the drawing is said so (`onSelect(name, true)`): the page stays.
  const withTools = g.nodes.length > TOOLS_FROM;
  const select = withTools ? (name) => onSelect && onSelect(name, true) : onSelect;
  const tools = withTools && html`<${DagTools} g=${g} states=${states} selected=${selected} onSelect=${select} zoom=${zoom} setZoom=${setZoom} fit=${fit}/>`;
  if (lay.large) {
    return html`<div ref=${wrap}>${tools}<${CanvasDag} g=${g} lay=${lay} states=${states} selected=${selected} onSelect=${select} zoom=${zoom}/></div>`;
  }
  return html`<div ref=${wrap}>${tools}<${SvgDag} g=${g} lay=${lay} states=${states} selected=${selected} onSelect=${select} zoom=${zoom}/></div>`;
}

/// The DAG up to LARGE operations, as SVG, scaled by `zoom`.
function SvgDag({ g, lay, states, selected, onSelect, zoom }) {
  const scroller = useRef(null);
  // The middle of the view at the zoom before, kept when the zoom changes with nothing
  // selected (review55 L4).
  const shown = useRef({ zoom, middle: null });
  const el = scroller.current;
  if (el && shown.current.zoom !== zoom) shown.current = { zoom: shown.current.zoom, middle: middleOf(el, shown.current.zoom) };
  useEffect(() => {
    if (selected) reveal(scroller.current, lay.pos.get(selected), zoom);
    else if (shown.current.middle) centre(scroller.current, shown.current.middle, zoom);
    shown.current = { zoom, middle: null };
  }, [selected, zoom]);
  const edgePath = (e) => {
    const a = lay.pos.get(e.from);
    const b = lay.pos.get(e.to);
    if (!a || !b) return '';
    if (lay.large) return `M${a.x + W},${a.y + H / 2} L${b.x},${b.y + H / 2}`;
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const my = (y1 + y2) / 2;
    return `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
  };
  return html`<div class="dag-wrap" data-layout=${lay.large ? 'layered' : 'dagre'} data-zoom=${zoom} ref=${scroller}>
    <svg class="dag" width=${lay.width * zoom} height=${lay.height * zoom} viewBox="0 0 ${lay.width} ${lay.height}" role="img" aria-label="operation DAG">
      <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs>
      <${Edges} g=${g} lay=${lay} path=${edgePath}/>
      ${g.nodes.map((n) => html`<${Node} key=${n.name} n=${n} p=${lay.pos.get(n.name)} s=${states.get(n.name)} selected=${selected === n.name} onSelect=${onSelect}/>`)}
    </svg>
  </div>`;
}

/// The edges: drawn again only when the graph's shape or layout changed.
class Edges extends Component {
  shouldComponentUpdate(next) {
    return next.lay !== this.props.lay || next.g.edges.length !== this.props.g.edges.length;
  }

  render({ g, path }) {
    return html`<g class="edges">${g.edges.map((e) => html`<path class=${'edge' + (e.generated ? ' generated' : '')} d=${path(e)} marker-end="url(#arrow)"/>`)}</g>`;
  }
}

const UNSTARTED = { state: 'unstarted', percent: null, message: '' };

/// The font of a box's name, as app.css and the canvas draw it.
const NAME_FONT = '600 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
/// The width a box's name may take.
const NAME_WIDTH = W - 16;
let measurer = null;
const fitted = new Map();

/// `name`, cut (with …) to what fits a box at NAME_FONT: by measured width, not by characters
/// (dash54 L2: 21 wide letters ran out of the box; a name of 120 did on the canvas too).
export function fitName(name) {
  let hit = fitted.get(name);
  if (hit !== undefined) return hit;
  if (!measurer) {
    measurer = document.createElement('canvas').getContext('2d');
    measurer.font = NAME_FONT;
  }
  const chars = Array.from(name);
  hit = name;
  if (measurer.measureText(name).width > NAME_WIDTH) {
    let lo = 0;
    let hi = chars.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (measurer.measureText(chars.slice(0, mid).join('') + '…').width <= NAME_WIDTH) lo = mid;
      else hi = mid - 1;
    }
    hit = chars.slice(0, lo).join('') + '…';
  }
  if (fitted.size > 20000) fitted.clear();
  fitted.set(name, hit);
  return hit;
}

/// One operation's box. Re-rendered only when its state, place or selection changed, so a
/// burst of reports touching a few operations costs a few nodes, not all 500.
class Node extends Component {
  shouldComponentUpdate(next) {
    const a = this.props;
    return a.s !== next.s || a.p !== next.p || a.selected !== next.selected || a.n !== next.n;
  }

  render({ n, p, s, selected, onSelect }) {
    const st = s || UNSTARTED;
    const pct = Math.max(0, Math.min(100, st.percent || 0));
    return html`<g class=${'node st-' + st.state + (selected ? ' selected' : '')} data-op=${n.name} data-state=${st.state}
        transform="translate(${p.x},${p.y})" onClick=${() => onSelect && onSelect(n.name)}>
      <title>${n.name} (${n.type || 'no type'}): ${st.state}${st.message ? ' — ' + st.message : ''}${n.generatedBy ? ' · generated by ' + n.generatedBy : ''}</title>
      <rect class="box" width=${W} height=${H} rx="6"/>
      <text x="8" y="17" class="name">${fitName(n.name)}</text>
      <text x="8" y="31" class="sub">${st.state}${st.percent != null ? ' · ' + Math.round(st.percent) + '%' : ''}</text>
      <rect class="bar-bg" x="8" y="36" width=${W - 16} height="4" rx="2"/>
      <rect class="bar" data-pct=${pct} x="8" y="36" width=${((W - 16) * pct) / 100} height="4" rx="2"/>
    </g>`;
  }
}

/// Colours of a state on the canvas (the SVG's, from app.css): [border, fill, bar].
function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (n) => css.getPropertyValue(n).trim();
  return {
    unstarted: [v('--unstarted-line'), '#fafbfc', v('--executing')],
    waiting: [v('--waiting-line'), '#ffffff', v('--executing')],
    executing: [v('--executing'), '#f0f4fd', v('--executing')],
    succeeded: [v('--succeeded'), '#effaf3', v('--succeeded')],
    failed: [v('--failed'), '#fdf0f0', v('--failed')],
    cancelled: [v('--cancelled-line'), '#f3f4f6', v('--executing')],
    fg: v('--fg'),
    muted: v('--muted'),
    edge: '#8a94a6',
    barBg: '#e6e9ef',
    panel: v('--panel') || '#fff',
  };
}

const PAD = 3; // what a box's redraw covers beyond it (its border, a selection's wider one)

/// The DAG above LARGE operations, on a canvas as big as the visible area under a scrolling
/// layer of the drawing's size: scrolling redraws what comes into view; a report redraws its
/// node's box (and the edge ends under it) only, a whole frame's reports at once. A click
/// selects the operation under the pointer; hovering names it (the layer's title).
class CanvasDag extends Component {
  constructor() {
    super();
    this.dirty = new Set();
    this.full = true;
    this.frame = 0;
    this.draw = this.draw.bind(this);
    this.onScroll = () => this.schedule(true);
    this.onClick = (e) => {
      const n = this.hit(e);
      if (n && this.props.onSelect) this.props.onSelect(n.name);
    };
    this.onMove = (e) => {
      const n = this.hit(e);
      const title = n ? this.describe(n) : '';
      if (this.scroller && this.scroller.title !== title) this.scroller.title = title;
    };
  }

  componentDidMount() {
    this.colors = palette();
    this.resize = new ResizeObserver(() => this.schedule(true));
    this.resize.observe(this.scroller);
    this.schedule(true);
  }

  componentDidUpdate() {
    if (this.revealAfter) {
      reveal(this.scroller, this.props.lay.pos.get(this.revealAfter), this.props.zoom || 1);
      this.revealAfter = null;
    } else if (this.keepMiddle) {
      centre(this.scroller, this.keepMiddle, this.props.zoom || 1);
      this.keepMiddle = null;
    }
  }

  componentWillUnmount() {
    if (this.resize) this.resize.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
  }

  // Only the shape changes the DOM (the scrolling layer's size); state and selection only
  // mark boxes to redraw.
  shouldComponentUpdate(next) {
    const a = this.props;
    if (next.lay !== a.lay || next.g !== a.g || next.zoom !== a.zoom) {
      this.schedule(true);
      if (next.selected) this.revealAfter = next.selected;
      // A zoom keeps the middle of the view where it was (review55 L4: the view jumped).
      else if (next.zoom !== a.zoom && this.scroller) this.keepMiddle = middleOf(this.scroller, a.zoom || 1);
      return true;
    }
    if (next.selected && next.selected !== a.selected) reveal(this.scroller, next.lay.pos.get(next.selected), next.zoom || 1);
    if (next.states !== a.states) {
      for (const [name, st] of next.states) if (a.states.get(name) !== st) this.dirty.add(name);
      for (const name of a.states.keys()) if (!next.states.has(name)) this.dirty.add(name);
    }
    if (next.selected !== a.selected) {
      if (a.selected) this.dirty.add(a.selected);
      if (next.selected) this.dirty.add(next.selected);
    }
    this.props = next;
    if (this.dirty.size) this.schedule(false);
    return false;
  }

  schedule(full) {
    if (full) this.full = true;
    if (!this.frame) this.frame = requestAnimationFrame(this.draw);
  }

  /// The node under a pointer event, if any.
  hit(e) {
    const r = this.scroller.getBoundingClientRect();
    const z = this.props.zoom || 1;
    const x = (e.clientX - r.left + this.scroller.scrollLeft) / z;
    const y = (e.clientY - r.top + this.scroller.scrollTop) / z;
    const { g, lay } = this.props;
    for (const n of g.nodes) {
      const p = lay.pos.get(n.name);
      if (p && x >= p.x && x <= p.x + W && y >= p.y && y <= p.y + H) return n;
    }
    return null;
  }

  describe(n) {
    const st = this.props.states.get(n.name) || UNSTARTED;
    const pct = st.percent != null ? ` ${Math.round(st.percent)}%` : '';
    return `${n.name} (${n.type || 'no type'}): ${st.state}${pct}${st.message ? ' — ' + st.message : ''}${n.generatedBy ? ' · generated by ' + n.generatedBy : ''}`;
  }

  draw() {
    this.frame = 0;
    const canvas = this.canvas;
    const sc = this.scroller;
    if (!canvas || !sc) return;
    const { g, lay, states, selected } = this.props;
    const dpr = window.devicePixelRatio || 1;
    const cw = sc.clientWidth;
    const ch = sc.clientHeight;
    if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
      canvas.width = Math.round(cw * dpr);
      canvas.height = Math.round(ch * dpr);
      canvas.style.width = cw + 'px';
      canvas.style.height = ch + 'px';
      this.full = true;
    }
    const ctx = canvas.getContext('2d');
    // What is in view, in the drawing's units (the layer is the drawing scaled by the zoom).
    const z = this.props.zoom || 1;
    const sx = sc.scrollLeft / z;
    const sy = sc.scrollTop / z;
    const w = sc.clientWidth / z;
    const h = sc.clientHeight / z;
    ctx.setTransform(dpr * z, 0, 0, dpr * z, -sx * dpr * z, -sy * dpr * z);
    const visible = (p) => p && p.x + W + PAD >= sx && p.x - PAD <= sx + w && p.y + H + PAD >= sy && p.y - PAD <= sy + h;
    let nodes;
    const full = this.full;
    ctx.save();
    if (full) {
      nodes = g.nodes.filter((n) => visible(lay.pos.get(n.name)));
      ctx.fillStyle = this.colors.panel;
      ctx.fillRect(sx, sy, w, h);
    } else {
      nodes = [];
      const byName = new Map(g.nodes.map((n) => [n.name, n]));
      ctx.beginPath();
      for (const name of this.dirty) {
        const n = byName.get(name);
        const p = n && lay.pos.get(name);
        if (!visible(p)) continue;
        nodes.push(n);
        ctx.rect(p.x - PAD, p.y - PAD, W + 2 * PAD, H + 2 * PAD);
      }
      ctx.clip();
      ctx.fillStyle = this.colors.panel;
      for (const n of nodes) {
        const p = lay.pos.get(n.name);
        ctx.fillRect(p.x - PAD, p.y - PAD, W + 2 * PAD, H + 2 * PAD);
      }
    }
    this.full = false;
    this.dirty.clear();
    if (nodes.length) {
      this.edges(ctx, g, lay, sx, sy, w, h);
      for (const n of nodes) this.node(ctx, n, lay.pos.get(n.name), states.get(n.name) || UNSTARTED, selected === n.name);
    }
    ctx.restore();
    // How many whole views were drawn (the tests and the benchmark wait for the first).
    if (full && this.base) this.base.dataset.drawn = String(Number(this.base.dataset.drawn || 0) + 1);
  }

  edges(ctx, g, lay, sx, sy, w, h) {
    const c = this.colors;
    ctx.lineWidth = 1.3;
    for (const generated of [false, true]) {
      ctx.strokeStyle = c.edge;
      ctx.setLineDash(generated ? [4, 3] : []);
      ctx.beginPath();
      for (const e of g.edges) {
        if (e.generated !== generated) continue;
        const a = lay.pos.get(e.from);
        const b = lay.pos.get(e.to);
        if (!a || !b) continue;
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
        if (Math.max(x1, x2) < sx || Math.min(x1, x2) > sx + w || Math.max(y1, y2) < sy || Math.min(y1, y2) > sy + h) continue;
        ctx.moveTo(x1, y1);
        ctx.lineTo(x2, y2);
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.fillStyle = c.edge;
    ctx.beginPath();
    for (const e of g.edges) {
      const a = lay.pos.get(e.from);
      const b = lay.pos.get(e.to);
      if (!a || !b || b.x < sx - 8 || b.x > sx + w + 8 || b.y + H < sy || b.y > sy + h) continue;
      // The arrowhead, pointing along the edge at its end.
      const x2 = b.x, y2 = b.y + H / 2;
      const ang = Math.atan2(y2 - (a.y + H / 2), x2 - (a.x + W));
      ctx.moveTo(x2, y2);
      ctx.lineTo(x2 - 7 * Math.cos(ang - 0.45), y2 - 7 * Math.sin(ang - 0.45));
      ctx.lineTo(x2 - 7 * Math.cos(ang + 0.45), y2 - 7 * Math.sin(ang + 0.45));
      ctx.closePath();
    }
    ctx.fill();
  }

  node(ctx, n, p, st, selected) {
    const c = this.colors;
    const [border, fill, bar] = c[st.state] || c.unstarted;
    const pct = Math.max(0, Math.min(100, st.percent || 0));
    ctx.beginPath();
    ctx.roundRect(p.x, p.y, W, H, 6);
    ctx.fillStyle = fill;
    ctx.fill();
    ctx.lineWidth = selected ? 3.5 : 2;
    ctx.strokeStyle = border;
    ctx.setLineDash(st.state === 'unstarted' ? [4, 3] : []);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = c.fg;
    ctx.font = NAME_FONT;
    ctx.fillText(fitName(n.name), p.x + 8, p.y + 17);
    ctx.fillStyle = c.muted;
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillText(st.state + (st.percent != null ? ' · ' + Math.round(st.percent) + '%' : ''), p.x + 8, p.y + 31);
    ctx.fillStyle = c.barBg;
    ctx.fillRect(p.x + 8, p.y + 36, W - 16, 4);
    ctx.fillStyle = bar;
    ctx.fillRect(p.x + 8, p.y + 36, ((W - 16) * pct) / 100, 4);
  }

  render({ g, lay, zoom }) {
    const z = zoom || 1;
    const height = Math.min(Math.ceil(lay.height * z) + 16, Math.round(window.innerHeight * 0.7));
    return html`<div class="dag-wrap dag-canvas" data-layout="layered" data-nodes=${g.nodes.length} data-edges=${g.edges.length} data-zoom=${z} style=${'height:' + height + 'px'}>
      <canvas class="dag" ref=${(c) => (this.canvas = c)} role="img" aria-label=${`operation DAG of ${g.nodes.length} operations`}></canvas>
      <div class="dag-scroll" ref=${(s) => (this.scroller = s)} onScroll=${this.onScroll} onClick=${this.onClick} onMouseMove=${this.onMove}>
        <div style=${`width:${Math.ceil(lay.width * z)}px;height:${Math.ceil(lay.height * z)}px`}></div>
      </div>
    </div>`;
  }
}
