using OnnxAlign.Core;
namespace OnnxAlign.Rewards;

/// <summary>
/// A low-rank reward r(x) = f(Ax + c): k affine features z = Ax + c (rows of A, one sample's shape each) and a
/// <see cref="FeatureFunction"/> f with declared structure (DESIGN §2, §3, §6).
/// </summary>
public sealed class FeatureReward : Reward
{
    /// <inheritdoc/>
    public override bool IsBlackBox => false;

    private readonly double[] _features;
    private readonly double[] _offsets;

    /// <summary>A reward from features A (row-major k × d), offsets c (k values; null = 0) and f.</summary>
    public FeatureReward(string name, ReadOnlySpan<float> features, int count, FeatureFunction function, ReadOnlySpan<float> offsets = default)
        : base(name, features.Length / Math.Max(count, 1))
    {
        if (count < 1 || features.Length % count != 0) throw new ArgumentException($"reward '{name}': {features.Length} values do not split into {count} features");
        if (function.Dimension is { } k && k != count) throw new ArgumentException($"reward '{name}': {function.Name} takes {k} features, got {count}");
        _features = new double[features.Length];
        for (int i = 0; i < features.Length; i++)
            _features[i] = float.IsFinite(features[i]) ? features[i] : throw new ArgumentException($"reward '{name}': features have non-finite values");
        if (offsets.Length is not 0 && offsets.Length != count) throw new ArgumentException($"reward '{name}': {offsets.Length} offsets for {count} features");
        _offsets = new double[count];
        for (int j = 0; j < offsets.Length; j++) _offsets[j] = offsets[j];
        FeatureCount = count;
        Function = function;
    }

    /// <summary>k, the number of features.</summary>
    public int FeatureCount { get; }

    /// <summary>f.</summary>
    public FeatureFunction Function { get; }

    /// <summary>Row j of A.</summary>
    public ReadOnlySpan<double> Feature(int j) => _features.AsSpan(j * Size, Size);

    /// <summary>c.</summary>
    public ReadOnlySpan<double> Offsets => _offsets;

    /// <summary>z = Ax + c for one sample.</summary>
    public void Project(ReadOnlySpan<double> x, Span<double> z)
    {
        for (int j = 0; j < FeatureCount; j++) z[j] = Numerics.Dot(Feature(j), x) + _offsets[j];
    }

    /// <summary>z = Ax + c for one float sample.</summary>
    public void Project(ReadOnlySpan<float> x, Span<double> z)
    {
        for (int j = 0; j < FeatureCount; j++)
        {
            var row = Feature(j);
            double s = 0;
            for (int i = 0; i < row.Length; i++) s += row[i] * x[i];
            z[j] = s + _offsets[j];
        }
    }

    /// <summary>z = Ax + c of each sample in <paramref name="samples"/> (one after another).</summary>
    public double[][] ProjectBatch(ReadOnlySpan<float> samples)
    {
        int n = samples.Length / Size;
        var z = new double[n][];
        for (int i = 0; i < n; i++)
        {
            z[i] = new double[FeatureCount];
            Project(samples.Slice(i * Size, Size), z[i]);
        }
        return z;
    }

    /// <summary>θ = Aᵀu as one float sample: the tilt of x that tilts the features by u (DESIGN §2).</summary>
    public float[] Transposed(ReadOnlySpan<double> u)
    {
        var theta = new double[Size];
        AddTransposed(u, theta);
        return theta.Select(v => (float)v).ToArray();
    }

    /// <summary>x += Aᵀv.</summary>
    public void AddTransposed(ReadOnlySpan<double> v, Span<double> x)
    {
        for (int j = 0; j < FeatureCount; j++)
        {
            var row = Feature(j);
            double c = v[j];
            if (c == 0) continue;
            for (int i = 0; i < x.Length; i++) x[i] += c * row[i];
        }
    }

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<float> x)
    {
        Span<double> z = stackalloc double[FeatureCount];
        Project(x, z);
        return Function.Value(z);
    }

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<double> x)
    {
        Span<double> z = stackalloc double[FeatureCount];
        Project(x, z);
        return Function.Value(z);
    }

    /// <inheritdoc/>
    public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient)
    {
        Span<double> z = stackalloc double[FeatureCount], g = stackalloc double[FeatureCount];
        Project(x, z);
        double value = Function.Gradient(z, g);
        gradient.Clear();
        AddTransposed(g, gradient);
        return value;
    }
}
