import { expect } from 'chai';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { pb } from '@hyperfarm/api';
import { ProcessFarm, until, vmSpec } from '../../daemon/test/process/harness.js';

/**
 * The console in a real browser (Debian's Chromium, driven by playwright-core) against a real
 * farm of processes: 3 daemons, one agent with 2 hosts on one cluster storage (so VMs can move).
 * The cases share the farm and run in order: the last one kills the daemon the page talks to.
 *
 * HYPERFARM_SCREENSHOTS=1 (`npm run screenshots:console`) also writes the screenshots of
 * docs/images/ from the views as these cases leave them; a plain test run writes no file.
 */
const DRILL_FIXTURES = join(import.meta.dirname, 'fixtures/drills');
const CHROMIUM = process.env.HYPERFARM_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS =
  process.env.HYPERFARM_SCREENSHOTS === '1' ? join(import.meta.dirname, '../../../docs/images') : '';

/** Moves the page to a view as a link would: same page, no reload. */
async function go(page: Page, hash: string): Promise<void> {
  await page.evaluate(
    (h) => ((globalThis as unknown as { location: { hash: string } }).location.hash = h),
    hash,
  );
}

async function shot(page: Page, name: string, hash?: string): Promise<void> {
  if (!SHOTS) return;
  if (hash) {
    await go(page, hash);
    await page.waitForTimeout(600); // a frame or two for the view to render; only for the picture
  }
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: true });
}

describe('web console in Chromium', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;
  let browser: Browser;
  let page: Page;
  let consoles: Map<string, string>;
  let reports: string;

  before(async () => {
    // The drill reports folder holds two reports of real `hyperfarm drill run` runs (one passed,
    // one failed) and a file that is not a report.
    reports = mkdtempSync(join(tmpdir(), 'hf-console-drills-'));
    cpSync(DRILL_FIXTURES, reports, { recursive: true });
    mkdirSync(join(reports, 'broken'));
    writeFileSync(join(reports, 'broken', 'report.json'), '{"drill": ');
    farm = await ProcessFarm.start({ daemons: 3, daemonArgs: ['--drill-reports', reports] });
    await farm.startAgent('agent-1', 2, ['--cluster-storage-path', join(farm.dir, 'cluster')]);
    consoles = new Map();
    for (const id of farm.daemonIds)
      consoles.set(id, (await farm.client(id).getClusterStatus({})).consoleAddress);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  });

  after(async () => {
    await browser?.close();
    await farm?.stop();
    if (reports) rmSync(reports, { recursive: true, force: true });
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
        // A busy guest: its host's CPU shows on the card.
        workload: { cpuDemandPercent: 80 },
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
    // Its host's card counts it: running VMs and memory (256 MiB and the host's per-VM overhead),
    // though the host's own record was last sent before the VM started.
    const live = await farm.client('daemon-1').getVm({ id: 'live-1' });
    const host = (await farm.client('daemon-1').listHosts({})).hosts.find(
      (h) => h.id === live.status!.hostId,
    )!;
    const card = page.locator(`[data-host="${host.id}"]`);
    await until('the card to count the running VM', 30_000, async () =>
      (await card.locator('.muted').innerText()).startsWith('1 running of 1 VMs') ? true : undefined,
    );
    const memory = card.getByRole('meter', { name: 'Memory' });
    expect(Number(await memory.getAttribute('aria-valuenow'))).to.equal(
      Math.round((100 * host.usage!.memoryUsedBytes) / host.capacity!.memoryBytes),
    );
    expect(host.usage!.memoryUsedBytes).to.equal(268435456 + host.capacity!.perVmOverheadBytes);
  });

  it("shows a busy host's CPU and last heartbeat, which the event stream does not carry", async () => {
    const hostId = (await farm.client('daemon-1').getVm({ id: 'live-1' })).status!.hostId;
    const card = page.locator(`[data-host="${hostId}"]`);
    const cpu = card.getByRole('meter', { name: 'CPU' });
    await until('the CPU bar above 0%', 30_000, async () =>
      Number(await cpu.getAttribute('aria-valuenow')) > 0 ? true : undefined,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; card: ${await card.innerText()}`);
    });
    expect(await cpu.getAttribute('aria-valuetext')).to.match(/^[1-9]\d*% of \d+ LPs$/);
    // The time of a heartbeat the leader heard, in the page's clock format; refreshed as it goes.
    const heartbeat = card.locator('.heartbeat');
    const first = await heartbeat.innerText();
    expect(first).to.match(/^last heartbeat \d/);
    await until('a later heartbeat', 30_000, async () =>
      (await heartbeat.innerText()) !== first ? true : undefined,
    );
  });

  it('creates and starts a VM from the console, by keyboard, and shows it Running', async () => {
    await go(page, '#/vms');
    const summary = page.locator('summary', { hasText: 'New VM' });
    await summary.focus();
    await page.keyboard.press('Enter');
    await page.getByLabel('Name', { exact: true }).focus();
    await page.keyboard.type('console-1');
    await page.getByLabel('Boot time (s)').focus();
    await page.keyboard.type('0.2');
    await page.keyboard.press('Enter'); // submits the form
    await page
      .locator('[data-vm-row="console-1"] .state-running')
      .waitFor({ timeout: 60_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}; page: ${await page.locator('main').innerText()}`);
      });
    const vm = await farm.client('daemon-2').getVm({ id: 'console-1' });
    expect(vm.status?.state).to.equal('VM_STATE_RUNNING');
    await page.locator('.notice-done', { hasText: 'Create console-1' }).waitFor({ timeout: 30_000 });
    // A refused request says what to fix: the same name again.
    await page.getByLabel('Name', { exact: true }).fill('console-1');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    const failed = page.locator('.notice-failed', { hasText: 'Create console-1' });
    await failed.waitFor({ timeout: 30_000 });
    expect(await failed.innerText()).to.match(/already|exists/i);
    await page.getByRole('button', { name: 'Dismiss Create console-1' }).first().click();
    await shot(page, 'vms');
  });

  it('migrates a VM from the console: progress shows, and it ends on the other host', async () => {
    const before = await farm.client('daemon-2').getVm({ id: 'console-1' });
    const source = before.status!.hostId;
    const target = (await farm.client('daemon-2').listHosts({})).hosts.find((h) => h.id !== source)!.id;
    await page.getByLabel('Select console-1').check();
    await page.locator('[data-action="migrate"]').click();
    const dialog = page.getByRole('dialog');
    // Placement's verdict on the other host, as ExplainPlacement gave it.
    await dialog.locator(`[data-verdict="${target}"]`).waitFor({ timeout: 30_000 });
    expect(await dialog.innerText()).to.contain('Let placement choose');
    await shot(page, 'migrate');
    await dialog.locator(`[data-verdict="${target}"] input[type=radio]`).check();
    await dialog.getByLabel(/Live/).check();
    await dialog.getByRole('button', { name: 'Migrate' }).click();
    await go(page, '#/operations');
    const row = page.locator('[data-migration]').first();
    await row.waitFor({ timeout: 30_000 }).catch(async (err: Error) => {
      throw new Error(`${err.message}; page: ${await page.locator('main').innerText()}`);
    });
    expect(await row.getByRole('meter').count()).to.equal(1);
    await until('the migration done, on the page', 120_000, async () =>
      (await row.getAttribute('data-phase')) === 'MIGRATION_PHASE_COMPLETED' ? true : undefined,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; page: ${await page.locator('main').innerText()}`);
    });
    // The page followed it as it went: a phase before the end, with its percentage.
    const seen = await page.evaluate(() =>
      (
        globalThis as unknown as { hyperfarm: { model: { timeline: { kind: string; text: string }[] } } }
      ).hyperfarm.model.timeline
        .filter((e) => e.kind === 'RESOURCE_KIND_MIGRATION')
        .map((e) => e.text),
    );
    expect(seen.some((t) => !/Completed|Failed/.test(t))).to.equal(true, seen.join('\n'));
    expect(await row.getByTestId('downtime').innerText()).to.match(/^\d+ ms$/);
    await shot(page, 'operations');
    await go(page, '#/vm/console-1');
    await until('the VM page shows the new host', 30_000, async () =>
      (await page.getByTestId('vm-host').innerText()).includes(target) ? true : undefined,
    );
    const after = await farm.client('daemon-2').getVm({ id: 'console-1' });
    expect(after.status?.hostId).to.equal(target);
    expect(after.status?.state).to.equal('VM_STATE_RUNNING');
    await shot(page, 'vm');
    await shot(page, 'farm', '#/farm');
    await shot(page, 'events', '#/events');
    await shot(page, 'control', '#/control');
    if (SHOTS) {
      await page.setViewportSize({ width: 1920, height: 1000 });
      await shot(page, 'farm-wide', '#/farm');
      await page.setViewportSize({ width: 1280, height: 800 });
    }
    await go(page, '#/farm');
  });

  it('shows an NLB cluster: members, the bucket map, and each member’s share of a traffic run', async () => {
    const c = farm.client('daemon-2');
    await c.createSwitch({ name: 'ext', type: 'SWITCH_TYPE_EXTERNAL' });
    const hosts = (await c.listHosts({})).hosts.map((h) => h.id).sort();
    const members: string[] = [];
    for (const [i, hostId] of hosts.entries()) {
      const config: pb.VmConfig = {
        ...vmSpec(`web-${i + 1}`),
        workload: { bootMs: 100, cpuDemandPercent: 5, requestServiceTimeMs: 2 },
        networkAdapters: [
          {
            kind: 'NIC_KIND_SYNTHETIC',
            staticMac: true,
            macAddress: `00-15-5D-AA-00-0${i + 1}`,
            switchName: 'ext',
            ipv4Address: `10.0.0.1${i + 1}/24`,
          },
        ],
      };
      const op = await c.createVm({ config, start: true, hostId });
      const done = await c.waitOperation({ id: op.id, timeoutMs: 60_000 });
      expect(done.error, done.message).to.equal(null);
      members.push(done.vm!.id);
    }
    const web = await c.createNlbCluster({
      name: 'web',
      virtualIp: '10.0.0.100',
      mode: 'NLB_MODE_UNICAST',
      switchName: 'ext',
      portRules: [
        {
          startPort: 80,
          endPort: 80,
          protocol: 'tcp',
          filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
          affinity: 'NLB_AFFINITY_NONE',
        },
      ],
      heartbeatPeriodMs: 100,
    });
    for (const [i, vmId] of members.entries())
      await c.addNlbMember({ clusterId: web.id, member: { vmId, hostPriority: i + 1 } });
    const run = await c.startTraffic({
      traffic: {
        id: 'run',
        switchName: 'ext',
        virtualIp: '10.0.0.100',
        port: 80,
        ratePerSecond: 50,
        durationMs: 120_000,
        clients: 200,
        retransmitTimeoutMs: 100,
        seed: 1,
      },
    });
    try {
      await go(page, '#/nlb/web');
      await until('both members listed', 30_000, async () =>
        (await page.locator('[data-member]').count()) === 2 ? true : undefined,
      );
      // Multiple-host filtering with equal weights: the 60 buckets split evenly, 30 each.
      await until('the converged bucket map', 60_000, async () => {
        const colours = await page
          .locator('.bucket')
          .evaluateAll((els) =>
            els.map((e) => (e as unknown as { style: { background: string } }).style.background),
          );
        const counts = [...new Set(colours)].map((c) => colours.filter((x) => x === c).length);
        return colours.length === 60 && counts.length === 2 && counts.every((n) => n === 30)
          ? true
          : undefined;
      });
      await page.getByRole('textbox', { name: 'Traffic run' }).fill('run');
      await page.getByLabel('on host').fill(run.hostId);
      await page.getByRole('button', { name: 'Follow' }).click();
      // Both members answer a share of each second's requests.
      await until('a share for each member', 60_000, async () => {
        const text = await page.getByTestId('shares').innerText();
        const shares = [...text.matchAll(/(\d+)%/g)].map((m) => Number(m[1]));
        return shares.length === 2 && shares.every((x) => x > 0) ? true : undefined;
      });
      if (SHOTS) await page.waitForTimeout(15_000); // a chart with some history, for the picture
      await shot(page, 'nlb');
    } finally {
      await c.stopTraffic({ hostId: run.hostId, id: 'run', remove: true });
    }
  });

  it('lists the drill reports with their verdicts and shows one: verdicts, timeline, steps', async () => {
    await go(page, '#/drills');
    const rows = page.locator('[data-drill]');
    await until('three reports listed', 30_000, async () => ((await rows.count()) === 3 ? true : undefined));
    expect(await page.locator('[data-drill="quick-migration"]').innerText()).to.match(/Passed[\s\S]*5 held/);
    expect(await page.locator('[data-drill="host-failure"]').innerText()).to.match(
      /Failed[\s\S]*3 held, 3 failed/,
    );
    expect(await page.locator('[data-drill="broken"]').innerText()).to.contain('not JSON');
    await shot(page, 'drills');
    await page.locator('[data-drill="host-failure"] a').click();
    const verdicts = page.locator('[data-verdict-ok]');
    await verdicts.first().waitFor({ timeout: 30_000 });
    expect(await page.locator('[data-verdict-ok="false"]').count()).to.equal(3);
    expect(await page.locator('[data-verdict-ok="true"]').count()).to.equal(3);
    expect(await page.locator('[data-verdict-ok="false"]').first().innerText()).to.contain(
      "VMs web-1, web-2 never down longer than 20.0 s after 'crash'",
    );
    // A lane per VM of the drill, and the crash among the marks.
    const lanes = await page
      .locator('[data-lane]')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-lane')));
    expect(lanes).to.deep.equal(['batch-1', 'db', 'scratch', 'web-1', 'web-2']);
    expect(await page.getByRole('list', { name: 'Steps, faults and leader changes' }).innerText()).to.contain(
      "kill-agent 'crash'",
    );
    await shot(page, 'drill');
    // A path out of the reports folder is refused, in words, and the page goes on.
    await go(page, '#/drills/..%2F..%2Fetc');
    const refused = page.locator('.error-note');
    await refused.waitFor({ timeout: 10_000 });
    expect(await refused.innerText()).to.match(/path/);
    expect(await page.locator('[data-verdict-ok]').count()).to.equal(0);
  });

  it('moves to another daemon when the one it talks to dies, and resumes without a reload', async () => {
    await go(page, '#/farm');
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
