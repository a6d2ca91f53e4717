using System.Globalization;
using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment;

/// <summary>How a constraint compares E_q[r] with its threshold.</summary>
public enum Relation
{
    /// <summary>E_q[r] ≥ b.</summary>
    AtLeast,

    /// <summary>E_q[r] ≤ b.</summary>
    AtMost,

    /// <summary>E_q[r] = b.</summary>
    Equal,
}

/// <summary>The threshold of a constraint: absolute b, or relative to the base law, mean + α·std of r under p.</summary>
/// <param name="Value">b, or α when <paramref name="Relative"/>.</param>
/// <param name="Relative">True for mean + α·std (estimated from a base batch).</param>
public readonly record struct Threshold(double Value, bool Relative)
{
    /// <summary>The absolute threshold given the base mean and standard deviation of r.</summary>
    public double Resolve(double baseMean, double baseStd) => Relative ? baseMean + Value * baseStd : Value;
}

/// <summary>A constraint E_q[r] (≥ | ≤ | =) b on a linear reward (DESIGN §4).</summary>
public sealed record Constraint(string Text, LinearReward Reward, Relation Relation, Threshold Threshold)
{
    /// <summary>
    /// Parses <c>SPEC&gt;=B</c>, <c>SPEC&lt;=B</c> or <c>SPEC==B</c> (also <c>=</c>), with B a number or
    /// <c>mean</c>, <c>mean+Astd</c>, <c>mean-Astd</c> (relative to the base law).
    /// </summary>
    /// <exception cref="ConfigException">Malformed text or reward.</exception>
    public static Constraint Parse(string text, IReadOnlyList<int> sampleShape, string? modelDirectory)
    {
        ConfigException Bad(string why) => ConfigException.For("constraint", $"'{text}': {why}");
        var (at, length, relation) = new[] { (">=", Relation.AtLeast), ("<=", Relation.AtMost), ("==", Relation.Equal), ("=", Relation.Equal) }
            .Select(o => (At: text.LastIndexOf(o.Item1, StringComparison.Ordinal), Length: o.Item1.Length, Relation: o.Item2))
            .Where(o => o.At > 0)
            .OrderByDescending(o => o.At + o.Length).ThenByDescending(o => o.Length)
            .FirstOrDefault();
        if (length == 0) throw Bad("expected REWARD>=B, REWARD<=B or REWARD==B (B a number, mean, or mean±Astd)");
        // "<=" and ">=" end with "=": a bare "=" found at the same place belongs to them.
        if (relation == Relation.Equal && length == 1 && at > 0 && text[at - 1] is '<' or '>' or '=')
            (at, length, relation) = (at - 1, 2, text[at - 1] switch { '<' => Relation.AtMost, '>' => Relation.AtLeast, _ => Relation.Equal });
        string spec = text[..at].Trim(), value = text[(at + length)..].Trim();
        LinearReward reward;
        try { reward = RewardSpec.ParseLinear(spec, sampleShape, modelDirectory); }
        catch (ConfigException e) { throw Bad(e.Message); }
        return new Constraint(text, reward, relation, ParseThreshold(value) ?? throw Bad($"'{value}': expected a number, mean, or mean±Astd (e.g. mean+1std)"));
    }

    private static Threshold? ParseThreshold(string value)
    {
        if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double b) && double.IsFinite(b)) return new Threshold(b, false);
        if (value == "mean") return new Threshold(0, true);
        if (!value.StartsWith("mean", StringComparison.Ordinal) || !value.EndsWith("std", StringComparison.Ordinal) || value.Length < 9) return null;
        string alpha = value[4..^3];
        return double.TryParse(alpha, NumberStyles.Float, CultureInfo.InvariantCulture, out double a) && double.IsFinite(a) && alpha[0] is '+' or '-'
            ? new Threshold(a, true) : null;
    }

    /// <summary>s = +1 for ≥ and =, −1 for ≤: the constraint reads s·(E_q[r] − b) ≥ 0 (or = 0).</summary>
    public int Sign => Relation == Relation.AtMost ? -1 : 1;
}
