/**
 * The JSON Schema of a drill file (draft-07, which editors' YAML plugins understand). The
 * committed copy in drills/schema.json is what a drill names in its first line
 * (`# yaml-language-server: $schema=schema.json`); a test keeps the two equal, and
 * `hyperfarm drill schema` prints this one.
 */

const DURATION = {
  description: 'a duration: "500ms", "2s", "1.5m", or a number of milliseconds',
  oneOf: [
    { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m)$' },
    { type: 'integer', minimum: 0 },
  ],
};
const SIZE = {
  description: 'a memory size: "256M", "4G" (MiB, GiB)',
  type: 'string',
  pattern: '^[0-9]+(M|G)$',
};
const NAME = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,40}$' };
const NAMES = { type: 'array', items: NAME, minItems: 1, uniqueItems: true };
const VMS = {
  description: 'VM names, or "all" for every VM of the workload',
  oneOf: [NAMES, { const: 'all' }],
};
/** A host by name, or the host a VM runs on when the step plays. */
const HOST_REF = {
  type: 'object',
  additionalProperties: false,
  properties: {
    host: { ...NAME, description: 'a host by name' },
    hostOf: { ...NAME, description: 'the host this VM runs on when the step plays' },
  },
  oneOf: [{ required: ['host'] }, { required: ['hostOf'] }],
};
const obj = (properties: Record<string, unknown>, required: string[] = [], description?: string) => ({
  type: 'object',
  additionalProperties: false,
  ...(description ? { description } : {}),
  properties,
  ...(required.length ? { required } : {}),
});

const CONDITION = obj(
  {
    vmsRunning: { ...VMS, description: 'these VMs are Running, as the daemons report' },
    leader: { const: true, description: 'every live daemon agrees on one leader' },
    hostsUp: { description: 'these hosts are Up ("all": every host)', oneOf: [NAMES, { const: 'all' }] },
    hostDown: { ...NAME, description: 'the daemons report this host Down' },
    hostRunsNothing: {
      ...NAME,
      description: "the host's own agent runs none of its VMs (it fenced itself), as it reports",
    },
    hostEmpty: { ...NAME, description: 'the daemons place no VM on this host' },
    vmOn: obj({ vm: NAME, host: NAME }, ['vm', 'host'], 'the VM is placed on this host'),
    vmNotOn: obj({ vm: NAME, host: NAME }, ['vm', 'host'], 'the VM is placed elsewhere'),
    migrationsDone: { const: true, description: 'no migration is in progress' },
  },
  [],
  'every condition named holds',
);

const STEP_ACTIONS = {
  create: {
    description: 'create workload VMs (all not created yet, when none are named)',
    oneOf: [{ type: 'null' }, obj({ vms: VMS, start: { type: 'boolean' } })],
  },
  start: { description: 'start VMs and wait until they run', oneOf: [{ type: 'null' }, obj({ vms: VMS })] },
  migrate: obj(
    {
      vm: NAME,
      to: { ...NAME, description: 'the target host; placement chooses when unset' },
      kind: { enum: ['live', 'quick'] },
      wait: { type: 'boolean', description: 'wait for the migration to end (default true)' },
    },
    ['vm'],
    'migrate a VM (MigrateVm)',
  ),
  drain: {
    ...obj({ ...HOST_REF.properties, wait: { type: 'boolean' } }),
    oneOf: HOST_REF.oneOf,
    description: 'put a host in maintenance: its VMs move away (DrainHost)',
  },
  undrain: { ...HOST_REF, description: 'end maintenance (UndrainHost)' },
  'kill-agent': { ...HOST_REF, description: "kill -9 a host's agent process" },
  'restart-agent': {
    ...HOST_REF,
    description: "start a host's agent again (killing it first if it runs), and wait until it is Up",
  },
  'kill-leader': { type: 'null', description: 'kill -9 the daemon that leads now' },
  'kill-daemon': { ...NAME, description: 'kill -9 a daemon by id (daemon-1...)' },
  'restart-daemons': { type: 'null', description: 'start every killed daemon again' },
  partition: obj(
    {
      daemons: { ...NAMES, description: 'these daemons, cut from the other daemons both ways' },
      minority: { const: true, description: 'a minority of the daemons, the leader among them' },
    },
    [],
    'cut daemons off from the rest (FaultService link cuts, both ways)',
  ),
  isolate: {
    ...HOST_REF,
    description: "cut a host's agent off from every daemon, both ways, while its process lives on",
  },
  heal: { type: 'null', description: 'remove every link fault on every process' },
  'slow-link': obj(
    {
      from: { ...NAME, description: 'a daemon id, a host, or "leader"' },
      to: { ...NAME, description: 'the far end (a daemon id or host); every daemon when unset' },
      delay: DURATION,
      drop: { type: 'number', minimum: 0, maximum: 1, description: 'share of messages dropped' },
    },
    ['from'],
    'delay or drop messages on a link, outbound from `from`',
  ),
  'fill-disk': {
    ...obj({ ...HOST_REF.properties, full: { type: 'boolean', description: 'false empties it again' } }),
    oneOf: HOST_REF.oneOf,
    description: "mark a host's cluster storage full",
  },
  stall: obj(
    { process: { ...NAME, description: 'a daemon id, a host, or "leader"' }, duration: DURATION },
    ['process', 'duration'],
    'freeze a process (its event loop and clock)',
  ),
  writes: {
    enum: ['start', 'stop'],
    description: 'start or stop the background writer (workload.writes)',
  },
  'start-traffic': { ...NAME, description: 'start a traffic run of workload.traffic' },
  'mark-traffic': obj(
    { traffic: NAME, phase: { enum: ['before', 'during', 'after'] } },
    ['traffic', 'phase'],
    'connections started from now on count in this phase',
  ),
  'stop-traffic': { ...NAME, description: "stop a traffic run's new connections" },
  hold: { ...DURATION, description: 'let time pass' },
  wait: {
    ...CONDITION,
    properties: { ...CONDITION.properties, within: DURATION },
    required: ['within'],
    description: 'wait until the condition holds; the drill fails if it does not within the time',
  },
  assert: { ...CONDITION, description: 'the condition holds now; the drill fails otherwise' },
};

const STEP = {
  type: 'object',
  additionalProperties: false,
  properties: {
    label: { ...NAME, description: 'a name expectations refer to (`after:`)' },
    ...STEP_ACTIONS,
  },
  oneOf: Object.keys(STEP_ACTIONS).map((k) => ({ required: [k] })),
};

const EXPECTATIONS = {
  vmsRunning: obj(
    {
      vms: VMS,
      within: DURATION,
      after: { ...NAME, description: 'the label of the step that starts the clock' },
    },
    ['within', 'after'],
    'the VMs are Running again within this time after the labelled step began',
  ),
  leaderWithin: obj(
    { within: DURATION, after: NAME },
    ['within', 'after'],
    'a leader (another one, if the leader was killed) is elected within this time',
  ),
  requestsLost: obj(
    { traffic: NAME, below: { type: 'integer', minimum: 1 } },
    ['traffic', 'below'],
    'fewer than this many connections of the traffic run are lost or reset',
  ),
  migrationDowntime: obj(
    { vm: NAME, below: DURATION },
    ['below'],
    'every migration (of this VM) completed, each with less downtime than this',
  ),
  fencedWithin: obj(
    { host: NAME, within: DURATION, after: NAME },
    ['host', 'within', 'after'],
    "the host's own agent stopped every VM it ran within this time (it fenced itself)",
  ),
};

const HOST = obj({ name: NAME, memory: SIZE, cpus: { type: 'integer', minimum: 1, maximum: 1024 } }, [
  'name',
]);

const FARM = obj(
  {
    daemons: { type: 'integer', minimum: 1, maximum: 7, description: 'control daemons (3 or 5)' },
    hosts: {
      description: 'a number of hosts (host-1...), or each host by name',
      oneOf: [
        { type: 'integer', minimum: 1, maximum: 32 },
        { type: 'array', items: HOST, minItems: 1 },
      ],
    },
    capacity: obj(
      { memory: SIZE, cpus: { type: 'integer', minimum: 1, maximum: 1024 } },
      [],
      "each host's memory and logical processors (default 32G, 8)",
    ),
    timing: {
      enum: ['fast', 'default'],
      description:
        "the daemons' liveness profile: default (hosts Down after 5 s, 5 s leases) or fast (Down after 1 s, 1 s leases: quicker failover, but a loaded machine may see hosts flap)",
    },
    clusterStorage: { type: 'boolean', description: 'hosts share cluster storage (default true)' },
    switches: {
      type: 'array',
      items: obj({ name: NAME, type: { enum: ['external', 'internal', 'private'] } }, ['name']),
    },
  },
  ['daemons', 'hosts'],
  "the farm's shape",
);

const WORKLOAD = obj(
  {
    vms: {
      type: 'array',
      items: obj(
        {
          name: NAME,
          count: { type: 'integer', minimum: 1, maximum: 500, description: 'that many VMs: NAME-1...' },
          memory: SIZE,
          cpus: { type: 'integer', minimum: 1, maximum: 64 },
          ha: { enum: ['high', 'medium', 'low', 'none'], description: 'HA priority (default medium)' },
          host: { ...NAME, description: 'the host to place it on' },
          switch: { ...NAME, description: 'a network adapter on this switch' },
          bootMs: { type: 'integer', minimum: 0, maximum: 60000 },
        },
        ['name'],
      ),
    },
    nlb: {
      type: 'array',
      items: obj(
        {
          name: NAME,
          vip: { type: 'string', pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$' },
          switch: NAME,
          members: NAMES,
        },
        ['name', 'vip', 'switch', 'members'],
      ),
    },
    traffic: {
      type: 'array',
      items: obj(
        {
          name: NAME,
          nlb: NAME,
          rate: {
            type: 'number',
            exclusiveMinimum: 0,
            maximum: 10000,
            description: 'connections per second',
          },
          duration: DURATION,
        },
        ['name', 'nlb', 'rate', 'duration'],
      ),
    },
    writes: obj(
      {
        concurrency: { type: 'integer', minimum: 1, maximum: 16 },
        limit: { type: 'integer', minimum: 1, description: 'stop after this many acknowledged writes' },
      },
      [],
      'a background writer: VM records created one after another, each acknowledged one checked at the end',
    ),
  },
  [],
  'what runs on the farm',
);

const BODY = {
  farm: FARM,
  workload: WORKLOAD,
  timeline: { type: 'array', items: STEP, minItems: 1 },
  expect: {
    type: 'array',
    description: 'besides these, always: no VM runs on two hosts, no acknowledged write is lost',
    items: {
      type: 'object',
      additionalProperties: false,
      properties: EXPECTATIONS,
      oneOf: Object.keys(EXPECTATIONS).map((k) => ({ required: [k] })),
    },
  },
};

export const DRILL_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://hyperfarm.dev/schemas/drill.json',
  title: 'hyperfarm drill',
  description:
    'A failure rehearsal: the farm, its workload, a timeline of steps and faults, and the expected outcome.',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'farm', 'timeline'],
  properties: {
    name: NAME,
    description: { type: 'string' },
    ...BODY,
    quick: {
      type: 'object',
      additionalProperties: false,
      description:
        'with --quick: merged into the drill (JSON Merge Patch, RFC 7386: objects merge, arrays and values replace); the result is checked like the drill',
      properties: {
        farm: { type: 'object' },
        workload: { type: 'object' },
        timeline: { type: 'array' },
        expect: { type: 'array' },
      },
    },
  },
} as const;

/** The step actions and expectation kinds, for code that dispatches on them. */
export const STEP_KINDS = Object.keys(STEP_ACTIONS) as (keyof typeof STEP_ACTIONS)[];
export const EXPECTATION_KINDS = Object.keys(EXPECTATIONS) as (keyof typeof EXPECTATIONS)[];
