//! The names a deployment gives, checked against the patterns Lambda and
//! CloudWatch document for them (the `FunctionName`, `Name` and `Qualifier`
//! parameters of the Lambda API reference, `AlarmName` of CloudWatch's), so
//! that a name AWS would refuse is refused when the deployment is asked for,
//! with the field named, before anything is written.

/// A function as Lambda's `FunctionName` takes it, unqualified: a name of 1
/// to 64 letters, digits, `-` and `_`, or its ARN or partial ARN
/// (`123456789012:function:name`).
/// The function's name in any of the forms `function` takes: two forms of
/// one function are one function.
pub fn bare_function(value: &str) -> &str {
    value.rsplit(':').next().unwrap_or(value)
}

pub fn function(value: &str) -> Result<(), String> {
    let name = match value.split(':').collect::<Vec<_>>().as_slice() {
        [name] => *name,
        [account, "function", name] if is_account(account) => *name,
        [
            "arn",
            partition,
            "lambda",
            region,
            account,
            "function",
            name,
        ] if partition.starts_with("aws") && is_region(region) && is_account(account) => *name,
        _ => {
            return Err(format!(
                "{value:?} is not a function name or ARN (a version or alias does not belong here)"
            ));
        }
    };
    if is_function_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a function name: 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

/// A function to invoke, as Lambda's `Invoke` takes it: as [`function`], or
/// qualified with a version or alias (`name:live`).
pub fn invocable(value: &str) -> Result<(), String> {
    if function(value).is_ok() {
        return Ok(());
    }
    match value.rsplit_once(':') {
        Some((unqualified, qualifier))
            if function(unqualified).is_ok()
                && (qualifier == "$LATEST"
                    || alias(qualifier).is_ok()
                    || version(qualifier).is_ok()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{value:?} is not a function name or ARN, with or without a version or alias"
        )),
    }
}

/// An alias name: 1 to 128 letters, digits, `-` and `_`, not all digits
/// (that would be a version).
pub fn alias(value: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !value.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not an alias name: 1 to 128 letters, digits, '-' or '_', not all digits"
        ))
    }
}

/// A published version: a number from 1 (not `$LATEST`, not an alias).
pub fn version(value: &str) -> Result<(), String> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 && !value.starts_with('0') => Ok(()),
        _ => Err(format!(
            "{value:?} is not a published version number (an alias or $LATEST cannot be deployed)"
        )),
    }
}

/// A CloudWatch alarm name: 1 to 255 characters, no control characters.
pub fn alarm(value: &str) -> Result<(), String> {
    let ok = (1..=255).contains(&value.chars().count()) && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not an alarm name: 1 to 255 characters"
        ))
    }
}

fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_account(value: &str) -> bool {
    value.len() == 12 && value.chars().all(|c| c.is_ascii_digit())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, ...
fn is_region(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && parts
            .last()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_aws_patterns() {
        for ok in [
            "greeter",
            "shop_api-2",
            "123456789012:function:greeter",
            "arn:aws:lambda:us-east-1:123456789012:function:greeter",
            "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:greeter",
        ] {
            assert_eq!(function(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "greeter/../../x",
            "greeter:live",
            "a b",
            &"x".repeat(65),
            "arn:aws:lambda:us-east-1:1234:function:greeter",
            "arn:aws:s3:::bucket",
        ] {
            assert!(function(bad).is_err(), "{bad:?}");
        }
        assert_eq!(invocable("sluice-pre-traffic"), Ok(()));
        assert_eq!(invocable("hooks:live"), Ok(()));
        assert_eq!(
            invocable("arn:aws:lambda:eu-west-1:123456789012:function:hooks:7"),
            Ok(())
        );
        assert!(invocable("hooks:live:extra").is_err());
        assert!(invocable("../x").is_err());

        assert_eq!(alias("live"), Ok(()));
        for bad in ["", "../cli", "42", "a:b", &"a".repeat(129)] {
            assert!(alias(bad).is_err(), "{bad:?}");
        }
        assert_eq!(version("7"), Ok(()));
        for bad in ["", "0", "07", "$LATEST", "live", "-1"] {
            assert!(version(bad).is_err(), "{bad:?}");
        }
        assert_eq!(alarm("greeter errors > 5%"), Ok(()));
        assert!(alarm("").is_err());
        assert!(alarm("a\nb").is_err());
    }
}
