//! The order state machine and the idempotency key, without any network.

use super::*;

fn items() -> Vec<Item> {
    vec![Item {
        product: "ceramic-mug".into(),
        quantity: 2,
    }]
}

fn placed(placed: Placed) -> Order {
    match placed {
        Placed::New(order) => order,
        Placed::Repeat(order) => panic!("expected a new order, got a repeat of {}", order.id),
    }
}

#[test]
fn an_order_moves_created_paid_confirmed_and_nowhere_else() {
    let mut book = Book::default();
    let order = placed(book.place(None, 1, items(), 2400, false));
    assert_eq!(order.status, Status::Created);

    // Confirming an unpaid order is refused and changes nothing.
    assert_eq!(
        book.update(order.id, Order::confirm),
        Some(Err(WrongState {
            from: Status::Created,
            to: Status::Confirmed
        }))
    );
    let paid = book.update(order.id, Order::pay);
    assert_eq!(paid.map(|r| r.map(|o| o.status)), Some(Ok(Status::Paid)));
    // Paying twice is refused.
    assert!(matches!(book.update(order.id, Order::pay), Some(Err(_))));
    let confirmed = book
        .update(order.id, Order::confirm)
        .and_then(Result::ok)
        .expect("a paid order confirms");
    assert_eq!(
        confirmed.history,
        [Status::Created, Status::Paid, Status::Confirmed]
    );
    // Nothing follows confirmed.
    assert!(matches!(book.update(order.id, Order::pay), Some(Err(_))));
    assert!(matches!(
        book.update(order.id, Order::confirm),
        Some(Err(_))
    ));
    // An order this replica does not hold.
    assert_eq!(book.update(999, Order::pay), None);
}

#[test]
fn checkout_pays_and_confirms_in_one_step() {
    let mut book = Book::default();
    let order = placed(book.place(None, 1, items(), 2400, true));
    assert_eq!(order.status, Status::Confirmed);
    assert_eq!(
        order.history,
        [Status::Created, Status::Paid, Status::Confirmed]
    );
    assert_eq!(book.get(order.id), Some(&order));
}

#[test]
fn a_repeated_key_returns_the_first_order() {
    let mut book = Book::default();
    let first = placed(book.place(Some("k-1"), 1, items(), 2400, true));
    // A retry of the same request, even with another body, gets the first order back.
    assert_eq!(
        book.place(Some("k-1"), 2, vec![], 0, false),
        Placed::Repeat(first.clone())
    );
    // Another key, or none, is another order.
    let second = placed(book.place(Some("k-2"), 1, items(), 2400, true));
    let third = placed(book.place(None, 1, items(), 2400, true));
    assert_ne!(first.id, second.id);
    assert_ne!(second.id, third.id);
    assert_eq!(book.orders.len(), 3);
}
