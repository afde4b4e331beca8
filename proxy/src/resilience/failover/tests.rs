//! The failover rule's invariants, over generated outcomes, policies and progress.

use proptest::prelude::*;
use weft_proto::model::{Retries, RetryOn};

use super::*;

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Unreachable),
        Just(Outcome::Refused),
        Just(Outcome::Reset),
        Just(Outcome::TriedTooLong),
        Just(Outcome::Expired),
        Just(Outcome::ClientFailed),
        Just(Outcome::Overflow),
        (100u16..600, proptest::option::of(0u16..17))
            .prop_map(|(status, grpc)| Outcome::Answered { status, grpc }),
    ]
}

fn retry_on() -> impl Strategy<Value = RetryOn> {
    prop_oneof![
        Just(RetryOn::ConnectFailure),
        Just(RetryOn::RefusedStream),
        Just(RetryOn::Reset),
        Just(RetryOn::ServerError),
        Just(RetryOn::GatewayError),
        Just(RetryOn::Unavailable503),
        (0u16..17).prop_map(RetryOn::Grpc),
    ]
}

fn policy() -> impl Strategy<Value = Retries> {
    (proptest::collection::vec(retry_on(), 0..6), 0u32..11).prop_map(|(retry_on, max_retries)| {
        Retries {
            retry_on,
            max_retries,
            ..Retries::default()
        }
    })
}

fn progress() -> impl Strategy<Value = Progress> {
    (any::<bool>(), 0u32..12, 0usize..6).prop_map(|(replayable, retries, untried)| Progress {
        replayable,
        retries,
        untried,
    })
}

proptest! {
    /// Work reaches an upstream again only for a request that may be repeated, with
    /// a retry left, and never for a client's own failure or a spent deadline.
    #[test]
    fn work_is_sent_again_only_when_it_may_be(o in outcome(), p in policy(), g in progress()) {
        let verdict = decide(o, &p, g);
        if verdict.next == Next::Retry {
            prop_assert!(g.replayable);
            prop_assert!(g.retries < p.max_retries);
            let sent = matches!(o, Outcome::Reset | Outcome::TriedTooLong | Outcome::Answered { .. });
            prop_assert!(sent);
        }
    }

    /// Only what reached nothing moves, and only to an endpoint not tried yet.
    #[test]
    fn only_unsent_requests_move_and_only_to_untried_endpoints(
        o in outcome(), p in policy(), g in progress()
    ) {
        let verdict = decide(o, &p, g);
        if verdict.next == Next::Move {
            let unsent = matches!(o, Outcome::Unreachable | Outcome::Refused);
            prop_assert!(unsent);
            prop_assert!(g.untried > 0);
        }
    }

    /// A failed connect is always evidence about the endpoint (it leaves rotation)
    /// and never feeds outlier detection as an answer would.
    #[test]
    fn a_failed_connect_takes_the_endpoint_out_of_rotation(p in policy(), g in progress()) {
        let verdict = decide(Outcome::Unreachable, &p, g);
        prop_assert_eq!(verdict.feedback, Feedback::Unreachable);
        prop_assert_ne!(verdict.next, Next::Retry);
    }

    /// A client that breaks its own request, or a request the proxy refused itself,
    /// says nothing about the endpoint and is not tried again.
    #[test]
    fn nothing_is_blamed_on_an_endpoint_that_was_not_at_fault(p in policy(), g in progress()) {
        for o in [Outcome::ClientFailed, Outcome::Overflow] {
            prop_assert_eq!(decide(o, &p, g), Verdict { feedback: Feedback::None, next: Next::Respond });
        }
    }

    /// Answers are judged by status alone: a success is never retried, and
    /// feedback follows the status whatever happens next.
    #[test]
    fn answers_feed_back_by_status(status in 100u16..600, grpc in proptest::option::of(0u16..17),
                                   p in policy(), g in progress()) {
        let verdict = decide(Outcome::Answered { status, grpc }, &p, g);
        let failed = status >= 500 || grpc == Some(14);
        prop_assert_eq!(verdict.feedback == Feedback::Failure, failed);
        prop_assert_eq!(verdict.feedback == Feedback::Success, !failed);
        if !p.retries_status(status, grpc) {
            prop_assert_eq!(verdict.next, Next::Respond);
        }
    }

    /// Following the rule, one request makes at most `1 + max_retries` sends of
    /// work, and at most one attempt per endpoint that could not be reached.
    #[test]
    fn a_request_is_bounded(outcomes in proptest::collection::vec(outcome(), 1..40),
                            p in policy(), endpoints in 1usize..6, replayable in any::<bool>()) {
        let (mut sends, mut retries, mut tried) = (1u32, 0u32, 1usize);
        for o in outcomes {
            let g = Progress { replayable, retries, untried: endpoints.saturating_sub(tried) };
            match decide(o, &p, g).next {
                Next::Respond => break,
                Next::Move => tried += 1,
                Next::Retry => {
                    retries += 1;
                    sends += 1;
                    tried += 1;
                }
            }
        }
        prop_assert!(sends <= 1 + p.max_retries);
        prop_assert!(tried <= endpoints + p.max_retries as usize);
    }
}

#[test]
fn the_issues_policy_moves_past_refused_connects_without_a_retry() {
    let policy = Retries {
        retry_on: vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::ServerError,
        ],
        max_retries: 2,
        ..Retries::default()
    };
    let fresh = Progress {
        replayable: true,
        retries: 2,
        untried: 1,
    };
    // Even with every retry spent, a refused connect still moves on.
    assert_eq!(
        decide(Outcome::Unreachable, &policy, fresh),
        Verdict {
            feedback: Feedback::Unreachable,
            next: Next::Move
        }
    );
    // A 503 with no retry left goes back to the client, counted against its endpoint.
    let answered = Outcome::Answered {
        status: 503,
        grpc: None,
    };
    assert_eq!(
        decide(answered, &policy, fresh),
        Verdict {
            feedback: Feedback::Failure,
            next: Next::Respond
        }
    );
    let first = Progress {
        retries: 0,
        ..fresh
    };
    assert_eq!(decide(answered, &policy, first).next, Next::Retry);
    // A POST whose body is not replayable is never sent twice.
    let post = Progress {
        replayable: false,
        ..first
    };
    assert_eq!(decide(Outcome::Reset, &policy, post).next, Next::Respond);
    assert_eq!(decide(Outcome::Unreachable, &policy, post).next, Next::Move);
}

#[test]
fn a_service_without_retries_still_moves_past_a_dead_endpoint() {
    let policy = Retries {
        retry_on: Vec::new(),
        max_retries: 0,
        ..Retries::default()
    };
    let progress = Progress {
        replayable: false,
        retries: 0,
        untried: 2,
    };
    assert_eq!(
        decide(Outcome::Unreachable, &policy, progress).next,
        Next::Move
    );
    // With retries on but connect-failure not listed, the operator said no.
    let strict = Retries {
        retry_on: vec![RetryOn::ServerError],
        max_retries: 2,
        ..Retries::default()
    };
    assert_eq!(
        decide(Outcome::Unreachable, &strict, progress).next,
        Next::Respond
    );
}
