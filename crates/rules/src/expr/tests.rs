use super::*;

fn err(source: &str) -> String {
    Expression::parse(source).unwrap_err().to_string()
}

#[test]
fn parses_properties_literals_and_calls_with_spans() {
    let expression =
        Expression::parse(r#"join(", ", onPremisesExtensionAttributes.extensionAttribute3, "x")"#)
            .unwrap();
    let Some(Node::Call {
        function,
        args,
        name_span,
        span,
    }) = expression.ast()
    else {
        panic!("expected a call");
    };
    assert_eq!(*function, Function::Join);
    assert_eq!(*name_span, Span::new(0, 4));
    assert_eq!(*span, Span::new(0, 66));
    assert_eq!(
        args[0],
        Node::Literal {
            value: ", ".into(),
            span: Span::new(5, 9)
        }
    );
    assert_eq!(
        args[1],
        Node::Property {
            path: vec![
                "onPremisesExtensionAttributes".into(),
                "extensionAttribute3".into()
            ],
            span: Span::new(11, 60)
        }
    );
}

#[test]
fn resolves_string_escapes() {
    let expression = Expression::parse(r#""a\"b\\c\n\t\r\u{e9}\u{1F600}""#).unwrap();
    let Some(Node::Literal { value, .. }) = expression.ast() else {
        panic!("expected a literal");
    };
    assert_eq!(value, "a\"b\\c\n\t\ré😀");
}

#[test]
fn allows_whitespace_and_a_trailing_comma() {
    assert!(Expression::parse("  coalesce ( mail ,\n userPrincipalName , )  ").is_ok());
    assert!(Expression::parse("onPremisesExtensionAttributes . extensionAttribute1").is_ok());
}

#[test]
fn reports_unknown_functions_with_the_name_span() {
    assert_eq!(err("cat(a, b)"), r#"unknown function "cat" at 0..3"#);
}

#[test]
fn reports_wrong_arity_over_the_whole_call() {
    assert_eq!(
        err(r#"join(", ")"#),
        r#"function "join" expects at least 2 arguments, found 1 at 0..10"#
    );
    assert_eq!(
        err("first(a, b)"),
        r#"function "first" expects 1 argument, found 2 at 0..11"#
    );
    assert_eq!(
        err("coalesce()"),
        r#"function "coalesce" expects at least 1 argument, found 0 at 0..10"#
    );
}

#[test]
fn reports_what_was_expected_and_found() {
    assert_eq!(
        err(""),
        "expected an expression, found end of expression at 0..0"
    );
    assert_eq!(
        err("coalesce(mail userPrincipalName)"),
        r#"expected "," or ")", found identifier "userPrincipalName" at 14..31"#
    );
    assert_eq!(
        err("mail mail"),
        r#"expected end of expression, found identifier "mail" at 5..9"#
    );
    assert_eq!(
        err("coalesce(mail,"),
        "expected an expression, found end of expression at 14..14"
    );
    assert_eq!(
        err("a.#"),
        r#"expected a property name after ".", found '#' at 2..3"#
    );
    assert_eq!(err("42"), "expected an expression, found '4' at 0..1");
}

#[test]
fn reports_bad_strings() {
    assert_eq!(
        err(r#"join("x, a)"#),
        "unterminated string literal at 5..11"
    );
    assert_eq!(err(r#""\q""#), r#"invalid escape sequence "\\q" at 1..3"#);
    assert_eq!(
        err(r#""\u{D800}""#),
        r#"invalid escape sequence "\\u{D800}" at 1..9"#
    );
}

#[test]
fn limits_nesting_and_length() {
    let deep = "lower(".repeat(40) + "mail" + &")".repeat(40);
    assert!(matches!(
        Expression::parse(&deep).unwrap_err().kind,
        ExprErrorKind::TooDeep
    ));
    let long = format!("\"{}\"", "x".repeat(MAX_EXPRESSION_LEN));
    assert!(matches!(
        Expression::parse(&long).unwrap_err().kind,
        ExprErrorKind::TooLong { .. }
    ));
}

#[test]
fn diagnose_flags_unknown_properties_but_allows_extensions() {
    let expression = Expression::parse(
        "coalesce(displayNme, extension_abc123_costCenter, extensionAttribute7, \
         onPremisesExtensionAttributes.extensionAttribute15, onPremisesExtensionAttributes.extensionAttribute16)",
    )
    .unwrap();
    let problems: Vec<String> = expression
        .diagnose()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        vec![
            r#"unknown property "displayNme" at 9..19"#.to_owned(),
            r#"unknown property "onPremisesExtensionAttributes.extensionAttribute16" at 123..173"#
                .to_owned(),
        ]
    );
}

#[test]
fn lenient_parse_keeps_the_error_and_round_trips_the_source() {
    let expression: Expression = serde_json::from_str(r#""cat(a)""#).unwrap();
    assert_eq!(expression.source(), "cat(a)");
    assert!(expression.error().is_some());
    assert_eq!(serde_json::to_string(&expression).unwrap(), r#""cat(a)""#);
}

#[test]
fn lists_referenced_top_level_properties() {
    let expression = Expression::parse(
        "join(\" \", givenName, onPremisesExtensionAttributes.extensionAttribute1, extensionAttribute2)",
    )
    .unwrap();
    assert_eq!(
        expression.referenced_properties(),
        vec![
            "givenName",
            "onPremisesExtensionAttributes",
            "onPremisesExtensionAttributes"
        ]
    );
}
