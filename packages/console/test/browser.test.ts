import { expect } from 'chai';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ProcessFarm, until } from '../../daemon/test/process/harness.js';

/**
 * The console in a real browser (Debian's Chromium, driven by playwright-core) against a real
 * farm of processes: 3 daemons, one agent with 2 hosts.
 */
const CHROMIUM = process.env.HYPERFARM_CHROMIUM ?? '/usr/bin/chromium';

describe('web console in Chromium', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;
  let browser: Browser;
  let page: Page;
  let consoles: Map<string, string>;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3 });
    await farm.startAgent('agent-1', 2);
    consoles = new Map();
    for (const id of farm.daemonIds)
      consoles.set(id, (await farm.client(id).getClusterStatus({})).consoleAddress);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  });

  after(async () => {
    await browser?.close();
    await farm?.stop();
  });

  it('shows every host of the farm, live', async () => {
    await page.goto(`${consoles.get('daemon-1')}/#/farm`);
    await page.locator('[data-host]').first().waitFor({ timeout: 30_000 });
    await until('two host cards', 30_000, async () =>
      (await page.locator('[data-host]').count()) === 2 ? true : undefined,
    );
    const hosts = (await farm.client('daemon-1').listHosts({})).hosts.map((h) => h.id).sort();
    const shown = await page
      .locator('[data-host]')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-host')));
    expect(shown.sort()).to.deep.equal(hosts);
    expect(await page.locator('[data-host] .badge').first().textContent()).to.equal('Up');
    // A VM created elsewhere (over gRPC) appears on its host's card without a reload.
    await farm.client('daemon-2').createVm({
      config: {
        name: 'live-1',
        processor: { count: 1 },
        memoryBytes: 268435456,
        guestOs: 'windows-server-2008-x64',
      },
      start: true,
    });
    await page
      .locator('[data-host] [data-vm="live-1"].state-running')
      .waitFor({ timeout: 60_000 })
      .catch(async (err: Error) => {
        const vm = await farm.client('daemon-1').getVm({ id: 'live-1' });
        throw new Error(
          `${err.message}; the farm says ${JSON.stringify(vm.status)}; page: ${await page.locator('main').innerText()}`,
        );
      });
  });

  it('moves to another daemon when the one it talks to dies, and resumes without a reload', async () => {
    const connected = page.getByTestId('connection');
    await until('connected to daemon-1', 10_000, async () =>
      (await connected.textContent())?.includes('daemon-1') ? true : undefined,
    );
    // The page knows the other consoles before its daemon dies.
    await until('every console known', 20_000, () =>
      page.evaluate(
        () =>
          (globalThis as unknown as { hyperfarm: { connection: { consoles: unknown[] } } }).hyperfarm
            .connection.consoles.length === 3 || undefined,
      ),
    );
    const marker = await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 42));
    await farm.killDaemon('daemon-1');
    await until('connected to another daemon', 30_000, async () => {
      const text = (await connected.textContent()) ?? '';
      return /connected to daemon-[23]/.test(text) ? text : undefined;
    });
    // Changes after the switch still arrive: the stream resumed from the page's revision.
    await until('a leader among the survivors', 30_000, () => farm.leader(['daemon-2', 'daemon-3']));
    await until('the VM created', 30_000, () =>
      farm
        .client('daemon-2')
        .createVm({
          config: {
            name: 'after-1',
            processor: { count: 1 },
            memoryBytes: 268435456,
            guestOs: 'windows-server-2008-x64',
          },
        })
        .then(() => true),
    );
    await page.locator('[data-vm="after-1"]').waitFor({ timeout: 30_000 });
    await page.locator('[data-vm="live-1"]').waitFor({ timeout: 5_000 });
    // Same page: nothing reloaded it.
    expect(await page.evaluate(() => (globalThis as unknown as { marker: number }).marker)).to.equal(marker);
  });
});
