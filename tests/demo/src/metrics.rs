//! Reading a service's `/metrics` (Prometheus text format) well enough to assert on counters.

/// The sum of every sample of `name` whose labels include all of `labels` (`0.0` when there is
/// none: a counter vector shows no sample until its first increment).
///
/// Summing matters for counter vectors: `cardsync_delta_rounds_total{cause="safety_poll"}`
/// asked without `outcome` adds the `ok` and `failed` samples.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_sample)
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
        })
        .map(|sample| sample.value)
        .sum()
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

/// One `name{k="v",…} value` line; label values are unescaped (`\"`, `\\`, `\n`).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some(Sample {
            name: head,
            labels: Vec::new(),
            value,
        });
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some(&(start, _)) = chars.peek() {
        let eq = body[start..].find("=\"")? + start;
        let key = body[start..eq].trim_start_matches(',').trim();
        let mut value_text = String::new();
        let mut escaped = false;
        let mut end = None;
        for (index, c) in body[eq + 2..].char_indices() {
            match (escaped, c) {
                (true, 'n') => {
                    value_text.push('\n');
                    escaped = false;
                }
                (true, other) => {
                    value_text.push(other);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 2 + index + 1);
                    break;
                }
                (false, other) => value_text.push(other),
            }
        }
        let end = end?;
        labels.push((key, value_text));
        while chars.peek().is_some_and(|&(index, _)| index < end) {
            chars.next();
        }
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP cardsync_delta_rounds_total Delta rounds\n\
        # TYPE cardsync_delta_rounds_total counter\n\
        cardsync_delta_rounds_total{cause=\"safety_poll\",outcome=\"ok\"} 3\n\
        cardsync_delta_rounds_total{cause=\"safety_poll\",outcome=\"failed\"} 1\n\
        cardsync_delta_rounds_total{cause=\"notification\",outcome=\"ok\"} 7\n\
        cardsync_delta_resyncs_total 2\n\
        odd{path=\"a \\\"quoted\\\" , value\"} 5\n";

    #[test]
    fn sums_the_samples_whose_labels_match() {
        assert_eq!(
            sample_sum(
                TEXT,
                "cardsync_delta_rounds_total",
                &[("cause", "safety_poll")]
            ),
            4.0
        );
        assert_eq!(sample_sum(TEXT, "cardsync_delta_rounds_total", &[]), 11.0);
        assert_eq!(sample_sum(TEXT, "cardsync_delta_resyncs_total", &[]), 2.0);
    }

    #[test]
    fn a_missing_metric_or_label_reads_as_zero() {
        assert_eq!(
            sample_sum(TEXT, "cardsync_delta_full_rounds_total", &[]),
            0.0
        );
        assert_eq!(
            sample_sum(TEXT, "cardsync_delta_rounds_total", &[("cause", "manual")]),
            0.0
        );
    }

    #[test]
    fn label_values_are_unescaped() {
        assert_eq!(
            sample_sum(TEXT, "odd", &[("path", "a \"quoted\" , value")]),
            5.0
        );
    }
}
