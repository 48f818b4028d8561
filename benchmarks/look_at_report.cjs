// Look at an HTML report as a person would: a real headless Chromium renders the page and saves a
// full-page PNG, and the page's own problems are printed (console errors, images or SVG that failed to
// render, text wider than the window). A measurement, never a test dependency: it needs packages
// from the npm registry that the project does not install.
//
//     npm install --prefix runs/browser @sparticuz/chromium puppeteer-core
//     NODE_PATH=runs/browser/node_modules node benchmarks/look_at_report.cjs runs/compare/report.html runs/compare/report.png
//
// Prints one line per check and exits non-zero if the page logged an error or drew no chart.
const path = require("path");
const chromium = require("@sparticuz/chromium");
const puppeteer = require("puppeteer-core");

async function main() {
  const [page_path, png] = process.argv.slice(2);
  if (!page_path || !png) throw new Error("usage: look_at_report.cjs REPORT.html OUT.png");
  const browser = await puppeteer.launch({
    executablePath: await chromium.executablePath(),
    args: [...chromium.args, "--disable-background-networking", "--no-first-run"],
    headless: true,
  });
  const page = await browser.newPage();
  const errors = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.setViewport({ width: 1360, height: 900 });
  await page.goto("file://" + path.resolve(page_path), { waitUntil: "load" });
  const facts = await page.evaluate(() => ({
    title: document.title,
    charts: document.querySelectorAll("svg").length,
    lines: document.querySelectorAll("svg polyline").length,
    empty_charts: [...document.querySelectorAll("svg")].filter((s) => s.getBBox().width === 0).length,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  }));
  await page.screenshot({ path: png, fullPage: true });
  await browser.close();
  console.log(`title: ${facts.title}`);
  console.log(`charts: ${facts.charts} (${facts.lines} lines drawn, ${facts.empty_charts} empty)`);
  console.log(`wider than the window: ${facts.overflow}`);
  console.log(`console errors: ${errors.length}${errors.length ? " - " + errors.join(" | ") : ""}`);
  console.log(`screenshot: ${png}`);
  if (errors.length || facts.charts === 0 || facts.empty_charts) process.exit(1);
}

main().catch((e) => { console.error(e); process.exit(2); });
