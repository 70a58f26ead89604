// The operation DAG of one agenda: every operation, started or not, with edges from
// `dependsOn` and references (the server's `Operation.dependsOn`) and dashed edges from a
// generator to the operations it generated, so those sit under it.
//
// Layout: dagre up to LARGE operations; above that (Argo's threshold for a frozen page) a
// layered layout in linear time — rank = longest path from a root, nodes of one rank in a
// column — drawn the same way. The layout depends only on the graph's shape, so it is computed
// once per shape and live progress only recolours nodes and moves their bars.

import { html, useMemo, Component } from './vendor/htm-preact-3.1.1.mjs';
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

/// The DAG view. `states`: Map(name → {state, percent, message}); `onSelect(name)`.
export function Dag({ operations, progress, states, selected, onSelect }) {
  const g = useMemo(() => graphOf(operations, progress), [operations, progress && progress.length]);
  const key = shapeKey(g);
  const lay = useMemo(() => layout(g), [key]);
  const edgePath = (e) => {
    const a = lay.pos.get(e.from);
    const b = lay.pos.get(e.to);
    if (!a || !b) return '';
    if (lay.large) return `M${a.x + W},${a.y + H / 2} L${b.x},${b.y + H / 2}`;
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const my = (y1 + y2) / 2;
    return `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
  };
  return html`<div class="dag-wrap" data-layout=${lay.large ? 'layered' : 'dagre'}>
    <svg class="dag" width=${lay.width} height=${lay.height} viewBox="0 0 ${lay.width} ${lay.height}" role="img" aria-label="operation DAG">
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
      <text x="8" y="17" class="name">${n.name.length > 22 ? n.name.slice(0, 21) + '…' : n.name}</text>
      <text x="8" y="31" class="sub">${st.state}${st.percent != null ? ' · ' + Math.round(st.percent) + '%' : ''}</text>
      <rect class="bar-bg" x="8" y="36" width=${W - 16} height="4" rx="2"/>
      <rect class="bar" data-pct=${pct} x="8" y="36" width=${((W - 16) * pct) / 100} height="4" rx="2"/>
    </g>`;
  }
}
