// Drives the node's handheld page in Debian's Chromium: log in, scan, be refused with
// the alarm, fill a good cylinder. Usage: node handheld.mjs http://127.0.0.1:PORT [screenshot.png]
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
});
const fail = async (msg) => { console.error("FAIL: " + msg); await browser.close(); process.exit(1); };
try {
  const page = await browser.newPage({ viewport: { width: 420, height: 900 } });
  await page.goto(url + "/handheld");
  if (!(await page.title()).includes("气瓶充装手持终端")) await fail("title");

  // A wrong password is refused on the page.
  await page.fill("#account", "demo-filler");
  await page.fill("#password", "wrong");
  await page.click("#login-btn");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("账号或密码错误"));

  await page.fill("#password", "demo-pass");
  await page.click("#login-btn");
  await page.waitForSelector("#work:not(.hidden)");

  // The overdue cylinder: scanned (Enter), checked, refused in red with the alarm.
  await page.fill("#code", "0101000002");
  await page.press("#code", "Enter");
  await page.waitForSelector("#state", { state: "visible" });
  await page.fill("#mass", "14");
  await page.click("#check-btn");
  await page.waitForSelector("#verdict.refused");
  const overdue = await page.textContent("#verdict");
  if (!overdue.includes("禁止充装") || !overdue.includes("超期未检") || !overdue.includes("TSG 23-2021")) await fail("overdue verdict: " + overdue);
  if (!(await page.evaluate(() => window.lastAlarm > 0))) await fail("no alarm sounded");

  // The good cylinder: an overfill is refused, a correct fill is recorded.
  await page.evaluate(() => { window.lastAlarm = 0; });
  await page.fill("#code", "0101000001");
  await page.press("#code", "Enter");
  await page.waitForFunction(() => document.getElementById("verdict").textContent.includes("3701020101000001"));
  await page.fill("#mass", "20");
  await page.click("#fill-btn");
  await page.waitForSelector("#verdict.refused");
  const over = await page.textContent("#verdict");
  if (!over.includes("超装")) await fail("overfill verdict: " + over);
  if (!(await page.evaluate(() => window.lastAlarm > 0))) await fail("no alarm on overfill");
  await page.fill("#mass", "14.5");
  await page.click("#check-btn");
  await page.waitForSelector("#verdict.allowed");
  await page.click("#fill-btn");
  await page.waitForFunction(() => document.getElementById("verdict").textContent.includes("已记录充装"));
  const state = await page.textContent("#state");
  if (!state.includes("充装次数")) await fail("state after fill: " + state);
  if (shot) {
    await page.fill("#code", "0101000003");
    await page.click("#check-btn");
    await page.waitForSelector("#verdict.refused");
    await page.screenshot({ path: shot, fullPage: true });
  }
  console.log("ok");
} catch (e) {
  await fail(String(e));
}
await browser.close();
