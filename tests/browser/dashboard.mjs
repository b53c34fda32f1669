// Drives the dashboard in Debian's chromium with Playwright (playwright-core from npm; it
// launches the system browser and downloads none). Run by tests/api.rs, which checks what
// this prints (one JSON object) against the controller.
//
//   node dashboard.mjs URL TOKEN RELEASE_FILE SCREENSHOT_DIR
//
// Loads the page with the token, records console errors, checks that the org chart shows
// the CEO and that a collapsed branch (writer, over editor) expands on a click, releases goal g0's waiting command and waits for its row to turn
// green without a reload, then presses the kill switch.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(process.env.PROTO_TEST_NPM + "/package.json");
const { chromium } = require("playwright-core");

const [url, token, release, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.PROTO_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = { consoleErrors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => result.consoleErrors.push(String(e)));
  page.on("dialog", (d) => d.accept("pressed in the page"));
  await page.goto(url + "/#token=" + token);

  // The org chart: the CEO at the top, expanded; a report of the CEO expands on a click.
  await page.waitForSelector('#org li[data-agent="ceo"]');
  result.ceo = await page.textContent('#org li[data-agent="ceo"] > .agent .name');
  result.agents = await page.locator("#org li").count();
  const editor = '#org li[data-agent="editor"]';
  result.writerVisible = await page.isVisible('#org li[data-agent="writer"]');
  result.editorVisibleBefore = await page.isVisible(editor);
  await page.click('#org li[data-agent="writer"] > .agent .toggle');
  result.editorVisibleAfter = await page.isVisible(editor);

  // The goals board before the goal is met.
  const g0 = 'tr[data-goal="g0"]';
  await page.waitForSelector(g0);
  result.before = await page.getAttribute(g0, "data-ready");
  await page.screenshot({ path: join(shots, "dashboard-before.png"), fullPage: true });

  // The goal is met while the page is open: its row turns green from the event stream.
  writeFileSync(release, "go");
  await page.waitForSelector('tr[data-goal="g0"][data-ready="True"]', { timeout: 60000 });
  result.after = await page.getAttribute(g0, "data-ready");
  result.afterClass = await page.getAttribute(g0, "class");
  result.navigations = await page.evaluate(() => performance.getEntriesByType("navigation").length);
  await page.screenshot({ path: join(shots, "dashboard-met.png"), fullPage: true });

  // The kill switch, pressed in the page.
  await page.click("#kill");
  await page.waitForSelector("#state.stopped", { timeout: 60000 });
  result.state = await page.textContent("#state");
  result.killLabel = await page.textContent("#kill");
  await page.screenshot({ path: join(shots, "dashboard-stopped.png"), fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
