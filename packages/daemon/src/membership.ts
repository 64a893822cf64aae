import {
  ApiError,
  createClient,
  failedPrecondition,
  hyperfarmProto,
  invalidArgument,
  promiseClient,
  status,
  unary,
  unavailable,
  type pb,
} from '@hyperfarm/api';
import {
  NotLeaderError,
  ProposalDroppedError,
  RaftArgumentError,
  RequestTimeoutError,
  type RaftNode,
} from '@hyperfarm/raft';
import type * as grpc from '@grpc/grpc-js';

const ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const ADDRESS = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

type ClusterClient = ReturnType<typeof promiseClient<pb.ClusterServiceClient>>;

/**
 * The control plane's own membership, served by every daemon: ListMembers answers from this
 * daemon's view; the changes run on the leader, and a follower forwards them there.
 */
export function membershipHandlers(
  raft: () => RaftNode | undefined,
): Partial<grpc.UntypedServiceImplementation> {
  const leaders = new Map<string, ClusterClient>();
  // The server answers before RaftNode.start() has returned; until then there is nothing to say.
  const node = (): RaftNode => {
    const n = raft();
    if (!n) throw unavailable('the daemon is starting: retry');
    return n;
  };

  /** Runs `local` on the leader, or the same call on the leader's ClusterService from a follower. */
  async function onLeader<T>(
    local: () => Promise<T>,
    remote: (leader: ClusterClient) => Promise<T>,
  ): Promise<T> {
    const leader = node().status().leader;
    if (leader === node().id || leader === '') return local().catch(raftError);
    const address = node().status().addresses[leader];
    if (!address) throw unavailable(`the leader '${leader}' has no known address yet: retry`);
    let client = leaders.get(address);
    if (!client) {
      client = promiseClient(createClient(hyperfarmProto().hyperfarm.v1.ClusterService, address));
      leaders.set(address, client);
    }
    return remote(client);
  }

  const member = (id: string): pb.Member => {
    const s = node().status();
    const progress = s.progress[id];
    return {
      id,
      address: s.addresses[id] ?? '',
      role: s.conf.learners.includes(id) ? 'learner' : 'voter',
      isLeader: id === s.leader,
      reachable: id === s.id || (progress ? progress.recentActive : id === s.leader),
      matchIndex: progress?.match ?? 0,
    };
  };

  const requireMember = (id: string, field: string): void => {
    if (!ID.test(id))
      throw invalidArgument(
        field,
        `'${id}' is not a daemon id (1 to 63 lowercase letters, digits or dashes)`,
      );
    const { voters, learners } = node().status().conf;
    if (![...voters, ...learners].includes(id))
      throw new ApiError(status.NOT_FOUND, `member '${id}' not found`);
  };

  return {
    ListMembers: unary<pb.ListMembersRequest__Output, pb.ListMembersResponse>(() => {
      const s = node().status();
      return {
        members: [...s.conf.voters, ...s.conf.learners].sort().map(member),
        leaderId: s.leader,
        term: s.term,
        answeredBy: s.id,
      };
    }),

    AddMember: unary<pb.AddMemberRequest__Output, pb.Member>(async (req) => {
      if (!ID.test(req.id))
        throw invalidArgument(
          'id',
          `'${req.id}' is not a daemon id (1 to 63 lowercase letters, digits or dashes)`,
        );
      if (!ADDRESS.test(req.address)) throw invalidArgument('address', `'${req.address}' is not host:port`);
      const { voters, learners } = node().status().conf;
      if ([...voters, ...learners].includes(req.id))
        throw new ApiError(status.ALREADY_EXISTS, `member '${req.id}' already exists`);
      return onLeader(
        async () => {
          await node().addMember(req.id, req.address, { learner: req.learner });
          return member(req.id);
        },
        (leader) => leader.addMember(req),
      );
    }),

    PromoteMember: unary<pb.PromoteMemberRequest__Output, pb.Member>(async (req) => {
      requireMember(req.id, 'id');
      if (!node().status().conf.learners.includes(req.id))
        throw failedPrecondition(`cannot promote member '${req.id}': it is already a voter`);
      return onLeader(
        async () => {
          await node().promoteMember(req.id);
          return member(req.id);
        },
        (leader) => leader.promoteMember(req),
      );
    }),

    RemoveMember: unary<pb.RemoveMemberRequest__Output, pb.RemoveMemberResponse>(async (req) => {
      requireMember(req.id, 'id');
      const { voters } = node().status().conf;
      if (voters.length === 1 && voters[0] === req.id)
        throw failedPrecondition(`cannot remove member '${req.id}': it is the last voter`);
      return onLeader(
        async () => {
          await node().removeMember(req.id);
          return {};
        },
        (leader) => leader.removeMember(req),
      );
    }),

    TransferLeadership: unary<pb.TransferLeadershipRequest__Output, pb.TransferLeadershipResponse>(
      async (req) => {
        if (req.toId) {
          requireMember(req.toId, 'to_id');
          if (node().status().conf.learners.includes(req.toId)) {
            throw failedPrecondition(`cannot hand leadership to '${req.toId}': it is a learner`);
          }
        }
        return onLeader(
          async () => {
            const to = req.toId || mostUpToDateVoter(node());
            if (!to) throw failedPrecondition('cannot transfer leadership: no other voter');
            if (to !== node().status().leader) await node().transferLeadership(to);
            return { leaderId: to };
          },
          (leader) => leader.transferLeadership(req),
        );
      },
    ),
  };
}

function mostUpToDateVoter(node: RaftNode): string | undefined {
  const s = node.status();
  return s.conf.voters
    .filter((id) => id !== s.id)
    .sort((a, b) => (s.progress[b]?.match ?? 0) - (s.progress[a]?.match ?? 0) || a.localeCompare(b))[0];
}

/** Raft's refusals as API statuses a caller can act on. */
function raftError(err: unknown): never {
  if (err instanceof NotLeaderError) {
    throw unavailable(err.leader ? `leadership moved to '${err.leader}': retry` : 'no leader yet: retry');
  }
  if (err instanceof ProposalDroppedError) throw failedPrecondition(err.message);
  if (err instanceof RaftArgumentError) throw invalidArgument(err.field, err.reason);
  if (err instanceof RequestTimeoutError) throw new ApiError(status.DEADLINE_EXCEEDED, err.message);
  throw err;
}
