"""What /queries masks in a statement's full text (the redactor knows secrets by their shape, not cards or emails)."""

from bot.stack.database import mask_statement


def test_card_numbers_that_pass_the_luhn_check_are_masked_with_spaces_or_dashes():
    assert mask_statement("VALUES (4111111111111111), ('4111 1111 1111 1111'), ('5500-0000-0000-0004')") == \
        "VALUES ([card]), ('[card]'), ('[card]')"


def test_numbers_that_are_no_card_stay_as_they_are():
    # Luhn fails, too short, too long, part of a longer word: ids and amounts are what an operator needs to read.
    text = "WHERE id = 4111111111111112 AND n = 123456789012 AND big = 12345678901234567890123 AND x = 'ab4111111111111111'"
    assert mask_statement(text) == text


def test_emails_and_long_tokens_are_masked_and_identifiers_are_not():
    text = ("UPDATE sessions SET owner = 'Dana.Deployer+ops@example.co.uk', token = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4' "
            "WHERE user_notification_preferences_id = 7")
    assert mask_statement(text) == ("UPDATE sessions SET owner = '[email]', token = '[token]' "
                                    "WHERE user_notification_preferences_id = 7")
