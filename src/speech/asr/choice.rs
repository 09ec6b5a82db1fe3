//! Matching what a caller said to one of the choices a menu offered: case and punctuation
//! do not count, a choice said inside a longer sentence counts in full, and a near miss
//! ("sails" for "sales", as a transcription server may write it) counts by how near it is.

/// The words of `text`: lower case, letters, digits and apostrophes; everything else splits.
pub fn normalise(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Lowest score [`match_choice`] accepts: a one-word choice may differ from the word said by
/// two letters in five ("sails" for "sales"), not by more.
pub const MIN_SCORE: f32 = 0.55;

/// The choice `text` names and how well (1.0: said exactly, somewhere in `text`), or `None`
/// when no choice scores [`MIN_SCORE`].
///
/// The score of a choice is one minus its cheapest alignment with any run of words of
/// `text`, per word of the choice: a missing or extra word costs one, a different word the
/// share of its letters that differ. Ties go to the longer choice, so "sales support"
/// beats "sales" when both were said.
pub fn match_choice(text: &str, choices: &[String]) -> Option<(String, f32)> {
    let said = normalise(text);
    if said.is_empty() {
        return None;
    }
    let mut best: Option<(&String, f32, usize)> = None;
    for choice in choices {
        let words = normalise(choice);
        if words.is_empty() {
            continue;
        }
        let score = (1.0 - alignment_cost(&words, &said) / words.len() as f32).max(0.0);
        let better = match best {
            None => true,
            Some((_, s, n)) => score > s || (score == s && words.len() > n),
        };
        if better {
            best = Some((choice, score, words.len()));
        }
    }
    best.filter(|&(_, s, _)| s >= MIN_SCORE)
        .map(|(c, s, _)| (c.clone(), s))
}

/// Cheapest word-level edit of `choice` into any contiguous run of `said` (free start and end).
fn alignment_cost(choice: &[String], said: &[String]) -> f32 {
    // prev[j]: cost of aligning the first i choice words so that they end before said[j].
    let mut prev: Vec<f32> = vec![0.0; said.len() + 1];
    for (i, cw) in choice.iter().enumerate() {
        let mut cur = vec![(i + 1) as f32; said.len() + 1];
        for (j, sw) in said.iter().enumerate() {
            let substitute = prev[j] + word_distance(cw, sw);
            cur[j + 1] = substitute.min(prev[j + 1] + 1.0).min(cur[j] + 1.0);
        }
        prev = cur;
    }
    prev.into_iter().fold(f32::INFINITY, f32::min)
}

/// Letter edit distance between two words as a share of the longer one (0 same, 1 unlike).
fn word_distance(a: &str, b: &str) -> f32 {
    if a == b {
        return 0.0;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] as f32 / a.len().max(b.len()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn menu() -> Vec<String> {
        ["sales", "support", "billing", "customer service"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn case_and_punctuation_do_not_count() {
        assert_eq!(normalise("Support, please!"), ["support", "please"]);
        assert_eq!(normalise("'Don't' -- STOP."), ["don't", "stop"]);
        assert_eq!(match_choice("SALES.", &menu()), Some(("sales".into(), 1.0)));
    }

    #[test]
    fn a_choice_inside_a_sentence_matches_in_full() {
        assert_eq!(
            match_choice("I want support please", &menu()),
            Some(("support".into(), 1.0))
        );
        assert_eq!(
            match_choice("uh customer service I guess", &menu()),
            Some(("customer service".into(), 1.0))
        );
    }

    #[test]
    fn a_near_word_matches_below_one_and_an_unlike_one_does_not() {
        let (choice, score) = match_choice("sails", &menu()).unwrap();
        assert_eq!(choice, "sales");
        assert!((MIN_SCORE..1.0).contains(&score), "{score}");
        assert_eq!(match_choice("banana", &menu()), None);
        assert_eq!(match_choice("", &menu()), None);
        assert_eq!(match_choice("...", &menu()), None);
    }

    #[test]
    fn the_threshold_is_two_letters_in_five() {
        let choices = vec!["abcde".to_string()];
        // Two letters changed: 0.6, just inside; three: 0.4, outside.
        assert!(match_choice("abxye", &choices).is_some());
        assert_eq!(match_choice("axyze", &choices), None);
    }

    #[test]
    fn a_phrase_with_a_word_missing_scores_by_the_words_left() {
        let choices = vec!["customer service desk".to_string()];
        let (_, score) = match_choice("customer desk", &choices).unwrap();
        assert!((score - 2.0 / 3.0).abs() < 1e-6, "{score}");
        assert_eq!(match_choice("desk", &choices), None);
    }

    #[test]
    fn the_longer_of_two_exact_choices_wins() {
        let choices = vec!["sales".to_string(), "sales support".to_string()];
        assert_eq!(
            match_choice("sales support", &choices).map(|m| m.0),
            Some("sales support".into())
        );
        assert_eq!(
            match_choice("sales", &choices).map(|m| m.0),
            Some("sales".into())
        );
    }

    proptest! {
        #[test]
        fn a_choice_always_matches_itself(
            choices in prop::collection::vec("[A-Za-z][A-Za-z ,.!']{0,20}", 1..6),
            pick in any::<prop::sample::Index>(),
        ) {
            let said = &choices[pick.index(choices.len())];
            let (got, score) = match_choice(said, &choices).unwrap();
            prop_assert_eq!(score, 1.0);
            prop_assert_eq!(normalise(&got), normalise(said));
        }
    }
}
