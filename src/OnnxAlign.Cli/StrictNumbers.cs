using System.CommandLine;
using System.CommandLine.Parsing;
using OnnxAlign.Core;

namespace OnnxAlign.Cli;

/// <summary>
/// Every numeric option reads plain numbers only (<see cref="Numbers"/>): the invariant culture, no group separators,
/// so <c>--lambda 0,5</c> is an error naming the flag instead of λ = 5, and <c>--count 1,000</c> is not 1000.
/// </summary>
internal static class StrictNumbers
{
    /// <summary>Installs the parsers on every numeric option of <paramref name="command"/> and its subcommands.</summary>
    public static void Apply(Command command)
    {
        foreach (var option in command.Options)
        {
            switch (option)
            {
                case Option<double> o: o.CustomParser = r => Parse(r, o, o.DefaultValueFactory, (string t, out double v) => Numbers.TryParse(t, out v), "a plain number (digits, '.', an exponent; no thousands separators)"); break;
                case Option<double?> o: o.CustomParser = r => Parse(r, o, o.DefaultValueFactory, (string t, out double? v) => { bool ok = Numbers.TryParse(t, out double d); v = d; return ok; }, "a plain number (digits, '.', an exponent; no thousands separators)"); break;
                case Option<int> o: o.CustomParser = r => Parse(r, o, o.DefaultValueFactory, (string t, out int v) => Numbers.TryParse(t, out v), "a whole number (digits only; no thousands separators)"); break;
                case Option<int?> o: o.CustomParser = r => Parse(r, o, o.DefaultValueFactory, (string t, out int? v) => { bool ok = Numbers.TryParse(t, out int i); v = i; return ok; }, "a whole number (digits only; no thousands separators)"); break;
                case Option<long> o: o.CustomParser = r => Parse(r, o, o.DefaultValueFactory, TryParseLong, "a whole number (digits only; no thousands separators)"); break;
            }
        }
        foreach (var sub in command.Subcommands) Apply(sub);
    }

    private delegate bool TryParser<T>(string text, out T value);

    private static T? Parse<T>(ArgumentResult result, Option option, Func<ArgumentResult, T>? fallback, TryParser<T> parse, string expected)
    {
        if (result.Tokens.Count == 0) return fallback is null ? default : fallback(result);
        string text = result.Tokens[^1].Value;
        if (parse(text, out T value)) return value;
        result.AddError($"{option.Name} '{text}': expected {expected}");
        return default;
    }

    private static bool TryParseLong(string text, out long value) =>
        long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out value);
}
