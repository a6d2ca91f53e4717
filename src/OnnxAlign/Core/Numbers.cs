using System.Globalization;

namespace OnnxAlign.Core;

/// <summary>
/// Plain numbers from text: invariant culture, an optional sign, digits, a decimal point and an exponent — no group
/// separators, so <c>0,5</c> and <c>1,000</c> are refused rather than read as 5 and 1000.
/// </summary>
public static class Numbers
{
    private const NumberStyles Plain = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent;

    /// <summary>Parses a plain finite number.</summary>
    public static bool TryParse(string? text, out double value) =>
        double.TryParse(text, Plain, CultureInfo.InvariantCulture, out value) && double.IsFinite(value);

    /// <summary>Parses a plain integer (optional sign, digits only).</summary>
    public static bool TryParse(string? text, out int value) =>
        int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);
}
