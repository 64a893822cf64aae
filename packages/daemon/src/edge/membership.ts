import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  quote,
  unary,
  type pb,
} from '@hyperfarm/api';
import { NotLeaderError, throwRaftApiError, type RaftNode } from '@hyperfarm/raft';
import { clusterClients, type ClusterClient } from './service-clients.js';

const ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const ADDRESS = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/**
 * The control plane's own membership, served by every daemon: ListMembers answers from this
 * daemon's view; the changes run on the leader, and a follower forwards them there.
 */
export function membershipHandlers(
  raft: RaftNode,
  clients = clusterClients(),
): Partial<pb.ClusterServiceHandlers> {
  /**
   * Runs `local` on the leader, or the same call on the leader's ClusterService from a follower.
   * Raft's refusals become statuses through Raft's one mapping (UNAVAILABLE names the leader).
   */
  async function onLeader<T>(
    local: () => Promise<T>,
    remote: (leader: ClusterClient) => Promise<T>,
  ): Promise<T> {
    const leader = raft.status().leader;
    if (leader === raft.id || leader === '') return local().catch(throwRaftApiError);
    const address = raft.status().addresses[leader];
    if (!address) throwRaftApiError(new NotLeaderError(leader));
    return remote(clients.of(address));
  }

  const member = (id: string): pb.Member => memberView(raft, id);

  const requireId = (id: string, field: string): void => {
    if (!ID.test(id))
      throw invalidArgument(
        field,
        `${quote(id)} is not a daemon id (1 to 63 lowercase letters, digits or dashes)`,
      );
  };

  const requireMember = (id: string, field: string): void => {
    requireId(id, field);
    const { voters, learners } = raft.status().conf;
    if (![...voters, ...learners].includes(id)) throw notFound('member', id);
  };

  return {
    ListMembers: unary<pb.ListMembersRequest__Output, pb.ListMembersResponse>(() => {
      const s = raft.status();
      return {
        members: memberViews(raft),
        leaderId: s.leader,
        term: s.term,
        answeredBy: s.id,
      };
    }),

    AddMember: unary<pb.AddMemberRequest__Output, pb.Member>(async (req) => {
      requireId(req.id, 'id');
      if (!ADDRESS.test(req.address))
        throw invalidArgument('address', `${quote(req.address)} is not host:port`);
      const { voters, learners } = raft.status().conf;
      if ([...voters, ...learners].includes(req.id)) throw alreadyExists('member', req.id);
      return onLeader(
        async () => {
          await raft.addMember(req.id, req.address, { learner: req.learner });
          return member(req.id);
        },
        (leader) => leader.addMember(req),
      );
    }),

    PromoteMember: unary<pb.PromoteMemberRequest__Output, pb.Member>(async (req) => {
      requireMember(req.id, 'id');
      if (!raft.status().conf.learners.includes(req.id))
        throw failedPrecondition(`cannot promote member '${req.id}': it is already a voter`);
      return onLeader(
        async () => {
          await raft.promoteMember(req.id);
          return member(req.id);
        },
        (leader) => leader.promoteMember(req),
      );
    }),

    RemoveMember: unary<pb.RemoveMemberRequest__Output, pb.RemoveMemberResponse>(async (req) => {
      requireMember(req.id, 'id');
      const { voters } = raft.status().conf;
      if (voters.length === 1 && voters[0] === req.id)
        throw failedPrecondition(`cannot remove member '${req.id}': it is the last voter`);
      return onLeader(
        async () => {
          await raft.removeMember(req.id);
          return {};
        },
        (leader) => leader.removeMember(req),
      );
    }),

    TransferLeadership: unary<pb.TransferLeadershipRequest__Output, pb.TransferLeadershipResponse>(
      async (req) => {
        if (req.toId) {
          requireMember(req.toId, 'to_id');
          if (raft.status().conf.learners.includes(req.toId)) {
            throw failedPrecondition(`cannot hand leadership to '${req.toId}': it is a learner`);
          }
        }
        return onLeader(
          async () => {
            const to = req.toId || mostUpToDateVoter(raft);
            if (!to) throw failedPrecondition('cannot transfer leadership: no other voter');
            if (to !== raft.status().leader) await raft.transferLeadership(to);
            return { leaderId: to };
          },
          (leader) => leader.transferLeadership(req),
        );
      },
    ),
  };
}

/** A replica as the answering daemon sees it. */
export function memberView(raft: RaftNode, id: string): pb.Member {
  const s = raft.status();
  const progress = s.progress[id];
  return {
    id,
    address: s.addresses[id] ?? '',
    role: s.conf.learners.includes(id) ? 'learner' : 'voter',
    isLeader: id === s.leader,
    reachable: id === s.id || (progress ? progress.recentActive : id === s.leader),
    matchIndex: progress?.match ?? 0,
  };
}

/** Every replica, voters and learners, by id. */
export function memberViews(raft: RaftNode): pb.Member[] {
  const { voters, learners } = raft.status().conf;
  return [...voters, ...learners].sort().map((id) => memberView(raft, id));
}

function mostUpToDateVoter(node: RaftNode): string | undefined {
  const s = node.status();
  return s.conf.voters
    .filter((id) => id !== s.id)
    .sort((a, b) => (s.progress[b]?.match ?? 0) - (s.progress[a]?.match ?? 0) || a.localeCompare(b))[0];
}
