import uuid

import pytest

from chalicelib.domain.customer import (
    Customer,
    CustomerCreated,
    CustomerDeleted,
    CustomerEmailChanged,
    CustomerPersonalDataErased,
)
from chalicelib.domain.errors import CustomerAlreadyExists, CustomerNotFound, InvalidValue
from chalicelib.domain.values import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH

# 254 characters, every label within 63.
LONGEST_EMAIL = "a@" + ".".join(["b" * 63] * 3) + "." + "c" * (MAX_EMAIL_LENGTH - 194)
ID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")


def created(name="Ada Lovelace", email="ada@example.com") -> Customer:
    customer = Customer()
    customer.create(ID, name, email)
    return customer


def test_create_records_one_event_and_sets_state():
    customer = created()
    assert customer.pending_events == [CustomerCreated(name="Ada Lovelace", email="ada@example.com")]
    assert (customer.id, customer.name, customer.email, customer.version) == (
        ID, "Ada Lovelace", "ada@example.com", 1)


def test_state_is_rebuilt_from_events_by_apply():
    events = [
        CustomerCreated(name="Ada", email="ada@example.com"),
        CustomerEmailChanged(email="ada@analytical.engine", previous_email="ada@example.com"),
    ]
    customer = Customer.rehydrate(ID, events)
    assert (customer.email, customer.version, customer.pending_events) == ("ada@analytical.engine", 2, [])


def test_create_twice_is_refused():
    customer = created()
    with pytest.raises(CustomerAlreadyExists):
        customer.create(ID, "Other", "other@example.com")


def test_changing_to_the_same_email_records_nothing():
    customer = Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="ada@example.com")])
    customer.change_email("ada@EXAMPLE.com")  # domains compare without case
    assert customer.pending_events == []
    assert customer.version == 1


def test_change_email_records_event():
    customer = Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="ada@example.com")])
    customer.change_email("new@example.com")
    assert customer.pending_events == [CustomerEmailChanged(email="new@example.com", previous_email="ada@example.com")]
    assert customer.loaded_version == 1 and customer.version == 2


def refuses_every_command(customer: Customer) -> None:
    for command in (lambda: customer.change_email("b@example.com"), customer.delete):
        with pytest.raises(CustomerNotFound):
            command()
    assert customer.pending_events == []


def test_deleted_customer_refuses_every_command():
    refuses_every_command(Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="a@example.com"),
                                                  CustomerDeleted()]))


def test_erasure_records_an_event_without_personal_data_and_releases_the_email():
    customer = Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="a@example.com")])
    assert customer.erase_personal_data() is True
    assert customer.pending_events == [CustomerPersonalDataErased()]
    assert CustomerPersonalDataErased().to_data() == {}
    reserve, release = customer.pending_reservations
    assert (reserve, [r.key for r in release]) == ([], ["a@example.com"])
    assert (customer.name, customer.email, customer.erased, customer.exists) == (None, None, True, False)


def test_erasure_happens_once_and_an_erased_customer_takes_no_command():
    customer = Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="a@example.com"),
                                       CustomerPersonalDataErased()])
    assert customer.erase_personal_data() is False and customer.pending_events == []
    refuses_every_command(customer)


def test_a_deleted_customer_can_be_erased_and_has_no_email_left_to_release():
    customer = Customer.rehydrate(ID, [CustomerCreated(name="Ada", email="a@example.com"), CustomerDeleted()])
    assert customer.erase_personal_data() is True
    assert customer.pending_reservations == ([], [])
    with pytest.raises(CustomerNotFound):
        Customer.rehydrate(ID, []).erase_personal_data()


def test_unknown_customer_cannot_be_changed():
    with pytest.raises(CustomerNotFound):
        Customer.rehydrate(ID, []).change_email("b@example.com")


@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_NAME_LENGTH + 1)])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidValue) as error:
        Customer().create(ID, name, "ada@example.com")
    assert error.value.field == "name"


def test_name_at_the_limit_is_accepted_and_trimmed():
    assert created(name=" " + "x" * MAX_NAME_LENGTH + " ").name == "x" * MAX_NAME_LENGTH


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@@example.com",
        "ada @example.com",
        " ada@example.com",
        "ada@example..com",
        "ada@-example.com",
        ".ada@example.com",
        "x" * 65 + "@example.com",
        LONGEST_EMAIL + "c",
    ],
)
def test_bad_emails_are_refused(email):
    with pytest.raises(InvalidValue) as error:
        Customer().create(ID, "Ada", email)
    assert error.value.field == "email"


@pytest.mark.parametrize("email", [LONGEST_EMAIL, "ada+tag@example.co.uk", "o'brien@example.com", "a@b-c.io"])
def test_good_emails_are_accepted(email):
    assert created(email=email).email == email
