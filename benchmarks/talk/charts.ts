// Small self-contained SVG charts for the benchmarks' results (the talk's, the network's; no
// chart library: two kinds of bar chart are all they need).

export interface BarGroup {
  label: string;
  /** One value per series, in series order; undefined draws nothing. */
  values: (number | undefined)[];
}

const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948"];
const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** Grouped bars: one group per label, one bar per series; `unit` labels the axis. */
export function groupedBars(title: string, series: string[], groups: BarGroup[], unit: string): string {
  // Wide enough for the bars and for the legend's row (150 px a name).
  const width = Math.max(120 + groups.length * (series.length * 16 + 24), 80 + series.length * 150);
  const height = 320;
  const plot = { left: 60, top: 40, bottom: 250 };
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.values.filter((v): v is number => v !== undefined)));
  const { parts, y } = axes(title, unit, width, height, plot, max);
  groups.forEach((group, g) => {
    const x0 = plot.left + 12 + g * (series.length * 16 + 24);
    group.values.forEach((value, s) => {
      if (value === undefined) return;
      parts.push(
        `<rect x="${x0 + s * 16}" y="${y(value)}" width="14" height="${plot.bottom - y(value)}" fill="${COLORS[s % COLORS.length]}"><title>${escape(`${group.label}, ${series[s]}: ${formatNumber(value)} ${unit}`)}</title></rect>`,
      );
    });
    parts.push(`<text x="${x0 + (series.length * 16) / 2}" y="${plot.bottom + 16}" text-anchor="middle">${escape(group.label)}</text>`);
  });
  parts.push(legend(series, plot.left, height - 30));
  return parts.join("\n") + "\n</svg>\n";
}

/** Stacked bars: one bar per label, stacked by category. */
export function stackedBars(title: string, categories: string[], bars: BarGroup[], unit: string): string {
  const width = 140 + bars.length * 64;
  const height = 340;
  const plot = { left: 70, top: 40, bottom: 260 };
  const totals = bars.map((bar) => bar.values.reduce<number>((sum, v) => sum + (v ?? 0), 0));
  const { parts, y } = axes(title, unit, width, height, plot, Math.max(1e-9, ...totals));
  bars.forEach((bar, b) => {
    const x = plot.left + 16 + b * 64;
    let base = 0;
    bar.values.forEach((value, c) => {
      if (value === undefined || value <= 0) return;
      parts.push(
        `<rect x="${x}" y="${y(base + value)}" width="40" height="${y(base) - y(base + value)}" fill="${COLORS[c % COLORS.length]}"><title>${escape(`${bar.label}, ${categories[c]}: ${formatNumber(value)} ${unit}`)}</title></rect>`,
      );
      base += value;
    });
    const lines = bar.label.split("\n");
    lines.forEach((line, i) => parts.push(`<text x="${x + 20}" y="${plot.bottom + 16 + i * 13}" text-anchor="middle">${escape(line)}</text>`));
  });
  parts.push(legend(categories, plot.left, height - 24));
  return parts.join("\n") + "\n</svg>\n";
}

/** The chart's frame: header, title, a value axis up to a round ceiling above `max` with grid lines, the unit; and the value-to-y mapping. */
function axes(
  title: string,
  unit: string,
  width: number,
  height: number,
  plot: { left: number; top: number; bottom: number },
  max: number,
): { parts: string[]; y: (value: number) => number } {
  const scale = niceCeiling(max);
  const y = (value: number) => plot.bottom - ((plot.bottom - plot.top) * value) / scale;
  const parts = [svgHeader(width, height), `<text x="${width / 2}" y="20" text-anchor="middle" font-weight="bold">${escape(title)}</text>`];
  for (let i = 0; i <= 4; i++) {
    const value = (scale * i) / 4;
    parts.push(`<line x1="${plot.left}" x2="${width - 20}" y1="${y(value)}" y2="${y(value)}" stroke="#ddd"/>`);
    parts.push(`<text x="${plot.left - 6}" y="${y(value) + 4}" text-anchor="end">${formatNumber(value)}</text>`);
  }
  parts.push(
    `<text x="14" y="${(plot.top + plot.bottom) / 2}" transform="rotate(-90 14 ${(plot.top + plot.bottom) / 2})" text-anchor="middle">${escape(unit)}</text>`,
  );
  return { parts, y };
}

function svgHeader(width: number, height: number): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>`;
}

function legend(names: string[], x: number, y: number): string {
  return names
    .map(
      (name, i) =>
        `<rect x="${x + i * 150}" y="${y - 9}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${x + i * 150 + 14}" y="${y}">${escape(name)}</text>`,
    )
    .join("\n");
}

function niceCeiling(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function formatNumber(value: number): string {
  if (value === 0) return "0";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toPrecision(2);
}

/** Several SVG documents one above the other, in one SVG. */
export function stackSvgs(svgs: string[]): string {
  let y = 0;
  let width = 0;
  const inner = svgs.map((svg) => {
    const w = Number(/width="(\d+)"/.exec(svg)![1]);
    const h = Number(/height="(\d+)"/.exec(svg)![1]);
    const nested = svg.replace("<svg ", `<svg x="0" y="${y}" `);
    y += h;
    width = Math.max(width, w);
    return nested;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}">\n${inner.join("\n")}</svg>\n`;
}
